//! The control dataflow of a cluster run: the cut protocol's messages ([`Ctl`]) between the
//! processes, over timely's own channels. Every worker builds it; the first worker of each
//! process sends that process's messages (to worker 0, where the coordinator is) and worker 0
//! sends the coordinator's (to the first worker of every process), each in the order made.
//! Each batch of messages is sent at a time of its own, closed at once so the exchange passes it
//! on; nothing waits for that time to complete.

use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::{Exchange, Inspect};

use super::{Checkpoints, Ctl};

/// One worker's end of the control dataflow.
pub struct Control {
    input: Handle<u64, (usize, Ctl)>,
    checkpoints: Checkpoints,
    /// Whether this worker sends its process's messages.
    sends: bool,
    processes: usize,
}

impl Control {
    /// Builds the control dataflow on `worker`, a worker of one of `processes` processes with
    /// `per_process` workers each.
    pub fn build(
        worker: &mut timely::worker::Worker,
        checkpoints: &Checkpoints,
        processes: usize,
        per_process: usize,
    ) -> Control {
        let receiver = checkpoints.clone();
        let input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<(usize, Ctl)>();
            stream
                .exchange(|(to, _): &(usize, Ctl)| *to as u64)
                .inspect(move |(_, m): &(usize, Ctl)| receiver.receive(m.clone()));
            input
        });
        Control {
            input,
            checkpoints: checkpoints.clone(),
            sends: worker.index().is_multiple_of(per_process.max(1)),
            processes,
        }
    }

    /// Sends this process's halt to every process, from whichever worker gets here first.
    pub fn pump_halt(&mut self) {
        let out = self.checkpoints.take_halt(self.processes);
        self.send(out);
    }

    /// Sends what the process (and, on worker 0, the coordinator) has to say.
    pub fn pump(&mut self) {
        if !self.sends {
            return;
        }
        let out = self.checkpoints.outgoing(self.processes);
        self.send(out);
    }

    /// Sends `out`, each message to its worker, at a time of its own.
    fn send(&mut self, out: Vec<(usize, Ctl)>) {
        if out.is_empty() {
            return;
        }
        for m in out {
            self.input.send(m);
        }
        // Only closing a time lets the exchange's buffers go (a flush keeps them).
        let next = self.input.time() + 1;
        self.input.advance_to(next);
    }
}
