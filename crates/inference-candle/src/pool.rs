//! Running a pass on rayon's pool with the pool's other threads kept awake (the model's
//! forward pass; the kernels example times its products the same way).

use std::sync::atomic::{AtomicBool, Ordering};

/// Run `f` on rayon's pool (the calling thread waits) while the pool's other threads run its
/// parallel work as it appears (`keep_awake`) instead of sleeping between its regions.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let flag = AtomicBool::new(false);
    let done = &flag;
    rayon::scope(|s| {
        let main = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            s.spawn(move |_| keep_awake(main, done));
        }
        // Set on the way out, however `f` ends (an error or a panic included).
        let _end = SetOnDrop(done);
        f()
    })
}

/// How long a helper kept awake for a pass may find nothing to do before it leaves (and its
/// thread may sleep). The serial stretches of a pass are far shorter; the limit only ends the
/// spin should two passes on the same pool each hold the other's helper (see [`keep_awake`]).
const AWAKE_IDLE: std::time::Duration = std::time::Duration::from_micros(500);

/// A pool thread's part in a pass it does not lead: run the pass's parallel work as it
/// appears (`rayon::yield_now` takes a job from any thread's queue) instead of letting the
/// thread fall asleep between the pass's parallel regions. Rayon's idle threads sleep after a
/// few dozen yields; on a virtual machine waking one takes tens of microseconds, and a pass
/// has about 150 regions (five per layer), each of which used to wake the other thread
/// (`perf stat` counted 30,900 futex calls in one `agora bench inference` run of about 180
/// passes; 8,671 since). The helper leaves when the pass ends, or after [`AWAKE_IDLE`] with
/// nothing to run: passes that run at once on the same pool could
/// otherwise each wait, inside the other's helper, for the other to end. Where the pass's own
/// thread picks the helper up itself, the helper returns at once. Only the scheduling changes;
/// every number is computed as before.
fn keep_awake(main: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == main {
        return;
    }
    let mut idle_since: Option<std::time::Instant> = None;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = None,
            Some(rayon::Yield::Idle) => {
                let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > AWAKE_IDLE {
                    return;
                }
                std::hint::spin_loop();
            }
            None => return,
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
