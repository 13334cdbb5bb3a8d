//! kill -9 a process while it commits blocks, many times: the store always reopens exactly at a
//! committed block whose root verifies, and the chain of parents is intact.

use std::process::{Command, Stdio};
use std::time::Duration;

use agora_store::Store;

use crate::*;

const CHILD_ENV: &str = "AGORA_STORE_CRASH_CHILD_DIR";

/// The child's body: open the store and commit blocks until killed (bounded, in case the parent
/// dies first).
#[test]
#[ignore = "child process of kill_9_during_commits_always_reopens_at_a_committed_block"]
fn crash_child_commits_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).expect("open");
    let genesis_state = genesis();
    store.init(&genesis_state).expect("init");
    let mut state = store.state().expect("state");
    for _ in 0..100_000 {
        state = commit_next(&store, &state, 20);
    }
}

#[test]
fn kill_9_during_commits_always_reopens_at_a_committed_block() {
    let dir = std::env::temp_dir().join(format!("agora-store-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().expect("test binary");
    let mut last_height = 0;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..25 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay_ms = 40 + seed % 260;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash::crash_child_commits_until_killed",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
        child.wait().expect("reap child");

        let store =
            Store::open(&dir).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let Some(tip) = store.tip().expect("tip") else {
            continue;
        };
        let state = store
            .state()
            .unwrap_or_else(|e| panic!("round {round}: state does not verify: {e}"));
        assert_eq!(state.root(), tip.root, "round {round}");
        assert!(
            tip.height >= last_height,
            "round {round}: went back from {last_height} to {}",
            tip.height
        );
        let mut parent = agora_primitives::Hash::default();
        for h in 1..=tip.height {
            let block = store
                .block(h)
                .expect("read")
                .unwrap_or_else(|| panic!("round {round}: block {h} missing"));
            assert_eq!(
                block.header.parent, parent,
                "round {round}: block {h} parent"
            );
            parent = agora_crypto::hash_of(&block.header);
        }
        last_height = tip.height;
    }
    assert!(last_height > 0, "the child never committed a block");
    eprintln!("crash test: 25 kills, final height {last_height}");
    let _ = std::fs::remove_dir_all(&dir);
}
