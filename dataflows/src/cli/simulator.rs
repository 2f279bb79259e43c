//! `tidings simulator`: the provider simulator (HTTP), printing what it receives.

use std::time::Duration;

use tidings_sinks::simulator::{Credentials, Fault, Simulator};

use super::Failure;

#[derive(clap::Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    bind: String,
    /// Answer a provider with a fault: `PROVIDER=STATUS[xTIMES][@DELAY_MS]` (repeatable),
    /// e.g. `tencent=503x2`, `feishu=0@3000` (slow).
    #[arg(long = "fault")]
    faults: Vec<String>,
}

/// Runs until interrupted.
pub fn run(args: SimulatorArgs) -> Result<(), Failure> {
    let bind = &args.bind;
    let faults = args
        .faults
        .iter()
        .map(|f| Fault::parse(f))
        .collect::<Result<Vec<Fault>, String>>()
        .map_err(|e| Failure::Usage(format!("--fault: {e}")))?;
    let sim = Simulator::start(bind, Credentials::default(), faults)
        .map_err(|e| Failure::Failed(format!("--bind {bind}: {e}")))?;
    eprintln!(
        "provider simulator on http://{0}/ — endpoints http://{0}/dingtalk, /feishu, /wecom, /tencent, /aliyun, /webhook; Ctrl-C stops",
        sim.addr
    );
    let mut shown = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let got = sim.received();
        for r in &got[shown..] {
            let verdict = match (&r.problem, r.faulted) {
                (_, true) => "FAULT".to_string(),
                (None, false) => "ok".to_string(),
                (Some(p), false) => format!("REJECTED: {p}"),
            };
            println!("{:<9} {verdict:<10} {}", r.provider, r.body);
        }
        shown = got.len();
    }
}
