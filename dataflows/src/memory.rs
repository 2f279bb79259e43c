//! Process-wide memory settings, applied by the binaries before any work.
//!
//! **Transparent huge pages off.** mimalloc asks the kernel for huge pages on its arenas
//! (`madvise(MADV_HUGEPAGE)`), and each first touch of such a 2 MiB region zeroes all of it.
//! The graph frees and reallocates its epoch buffers all the time, so the kernel's page
//! zeroing (`clear_page_erms`) was the largest single cost of the end-to-end run (14% of its
//! CPU). With huge pages off for the process the file throughput job ran 12–14% faster with
//! 8–14% less peak RSS (bench/MEASURED.md, "Huge pages off"). This is what mimalloc's own
//! `MIMALLOC_ALLOW_THP=0` does (`prctl(PR_SET_THP_DISABLE)`), which it only reads from the
//! environment before `main`; a user who sets `MIMALLOC_ALLOW_THP` keeps their choice.

use std::ffi::OsStr;

/// What [`init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Transparent huge pages are off for this process (and the children it starts).
    Disabled,
    /// `MIMALLOC_ALLOW_THP` is set: left to mimalloc and the user.
    LeftToUser,
    /// Not available here (not Linux, or the kernel refused): nothing changed.
    Unavailable,
}

/// Applies the process-wide memory settings. Call first thing in `main`.
pub fn init() -> HugePages {
    apply(std::env::var_os("MIMALLOC_ALLOW_THP").as_deref())
}

/// [`init`] with the environment variable's value given (so tests need not set it).
pub fn apply(allow_thp: Option<&OsStr>) -> HugePages {
    if allow_thp.is_some() {
        return HugePages::LeftToUser;
    }
    disable_thp()
}

#[cfg(target_os = "linux")]
fn disable_thp() -> HugePages {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => HugePages::Disabled,
        Err(_) => HugePages::Unavailable,
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_thp() -> HugePages {
    HugePages::Unavailable
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_go_off_unless_the_user_chose() {
        // The flag is the process's: this test only ever turns it on, as `init` would.
        assert_eq!(apply(Some(OsStr::new("1"))), HugePages::LeftToUser);
        assert_eq!(apply(None), HugePages::Disabled);
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
