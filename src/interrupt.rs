//! Ctrl-C as a request to stop, for work that has something to finish: a performance closes
//! its file, the REPL returns to its prompt. While someone [`listen`]s, the first Ctrl-C sets
//! [`requested`] and the work stops at its next step; a second Ctrl-C (or one while nobody
//! listens) ends the process as before, after deleting the files in flight.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static LISTENERS: AtomicUsize = AtomicUsize::new(0);
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C is a stop request while this lives (see the module doc).
#[must_use = "Ctrl-C is a request only while the guard lives"]
pub struct Listening(());

impl Drop for Listening {
    fn drop(&mut self) {
        // The outermost listener's request ends with it; an inner one (a render inside a REPL
        // input) leaves the request for the work around it.
        if LISTENERS.fetch_sub(1, Ordering::SeqCst) == 1 {
            REQUESTED.store(false, Ordering::SeqCst);
        }
    }
}

/// Takes Ctrl-C as a stop request until the guard is dropped. The outermost listener clears an
/// earlier request; an inner one keeps a pending request, so a Ctrl-C just before a render
/// inside a REPL input starts still stops it.
pub fn listen() -> Listening {
    if LISTENERS.load(Ordering::SeqCst) == 0 {
        REQUESTED.store(false, Ordering::SeqCst);
    }
    LISTENERS.fetch_add(1, Ordering::SeqCst);
    Listening(())
}

/// True once Ctrl-C asked the work to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Asks the listening work to stop, as Ctrl-C does (for a caller that stops it another way).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// For the signal handler: true when this Ctrl-C was taken as a stop request (someone listens
/// and no request is pending); false when the process should end.
pub fn on_signal() -> bool {
    LISTENERS.load(Ordering::SeqCst) > 0 && !REQUESTED.swap(true, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_a_request_the_second_ends_the_process() {
        assert!(!on_signal(), "nobody listens: the process ends");
        let guard = listen();
        assert!(!requested());
        assert!(on_signal());
        assert!(requested());
        assert!(!on_signal(), "a second Ctrl-C ends the process");
        drop(guard);
        assert!(!requested());
        REQUESTED.store(false, Ordering::SeqCst);

        // Work inside work (a render in a REPL input): a request made before the inner work
        // listens, or while it does, reaches both and ends with the outer.
        let outer = listen();
        assert!(on_signal());
        let inner = listen();
        assert!(
            requested(),
            "the inner listener dropped the pending request"
        );
        drop(inner);
        assert!(requested(), "the outer work no longer sees the request");
        drop(outer);
        assert!(!requested());
        let outer = listen();
        assert!(!requested(), "an old request carried into new work");
        drop(outer);
    }
}
