//! A spinner on stderr while a long call runs, for a person at a terminal
//! only: when stderr is a pipe or a file (scripts, cron, CI logs) nothing is
//! drawn, so captured output holds no carriage returns or escape codes.
//! The drawing is [`indicatif`]'s.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Frames of the spinner (the last one is never drawn: the line is
/// cleared when the spinner stops).
const FRAMES: &str = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ";
/// Time between frames.
const FRAME_TIME: Duration = Duration::from_millis(100);

/// A running spinner; [`Spinner::stop`] erases it.
#[derive(Debug, Default)]
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    /// Draws `message` with a spinner and the elapsed time on stderr, when
    /// stderr is a terminal; otherwise does nothing.
    pub fn start(message: impl Into<String>) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner::default();
        }
        let style = ProgressStyle::with_template("{spinner} {msg} {seconds}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars(FRAMES)
            .with_key(
                "seconds",
                |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.1} s", state.elapsed().as_secs_f64());
                },
            );
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(message.into());
        // The first frame is drawn at once, however short the call.
        bar.tick();
        bar.enable_steady_tick(FRAME_TIME);
        Spinner(Some(bar))
    }

    /// Stops the spinner and erases its line.
    pub fn stop(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
