//! A spinner on stderr while a long call runs, for a person at a terminal
//! only: when stderr is a pipe or a file (scripts, cron, CI logs) nothing is
//! drawn, so captured output holds no carriage returns or escape codes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Frames of the spinner.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Time between frames.
const FRAME_TIME: Duration = Duration::from_millis(100);

/// A running spinner; [`Spinner::stop`] erases it.
#[derive(Debug, Default)]
pub struct Spinner {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Draws `message` with a spinner and the elapsed time on stderr, when
    /// stderr is a terminal; otherwise does nothing.
    pub fn start(message: impl Into<String>) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner::default();
        }
        let message = message.into();
        let started = Instant::now();
        let draw = move |frame: char| {
            eprint!(
                "\r{frame} {message} {:.1} s",
                started.elapsed().as_secs_f64()
            );
        };
        // The first frame is drawn at once, however short the call.
        draw(FRAMES[0]);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            for frame in FRAMES.iter().cycle().skip(1) {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(FRAME_TIME) => draw(*frame),
                }
            }
            // Back to the start of the line, and clear it.
            eprint!("\r\x1b[2K");
        });
        Spinner {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the spinner and erases its line.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
