.PHONY: help demo test lint bench-build throughput

help: ## Show the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## Run the demo job (the README's first command)
	cargo run -- run examples/demo/job.toml

test: ## Run the tests (the README's second command)
	cargo test --workspace

lint: ## Format check and clippy
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench-build: ## Compile the benches without running them (as CI does)
	cargo check -p tidings-bench --benches

throughput: ## Generate 1M requests and measure the job on them (release build)
	python3 scripts/gen_requests.py --count 1000000 --scale 1000 --out target/bench/requests.jsonl
	cargo run -p tidings-bench --release -- throughput bench/jobs/throughput.toml
