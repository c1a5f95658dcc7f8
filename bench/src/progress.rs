//! The progress line shown on stderr while a stage runs, and the count of
//! operations it shows.

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Operations finished in the running stage, for the progress line.
pub static DONE: AtomicUsize = AtomicUsize::new(0);

/// Shows `stage`, seconds elapsed and operations done on stderr, updated in
/// place while the returned guard lives (only on a terminal; logs get the
/// step lines alone).
pub fn show(stage: &str) -> Progress {
    DONE.store(0, Ordering::Relaxed);
    let running = Arc::new(AtomicBool::new(true));
    if std::io::stderr().is_terminal() {
        let (running, stage) = (running.clone(), stage.to_owned());
        tokio::spawn(async move {
            let start = Instant::now();
            while running.load(Ordering::Relaxed) {
                eprint!(
                    "\r      {stage}: {:>5.1} s, {:>9} done ",
                    start.elapsed().as_secs_f64(),
                    DONE.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprint!("\r{:80}\r", "");
        });
    }
    Progress(running)
}

/// Stops the progress line when dropped.
pub struct Progress(Arc<AtomicBool>);

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
