//! Damaged bytes never panic the process. redb trusts the file it reads:
//! a flipped byte in a page can make its own decoders panic (a `&str` key
//! that is not UTF-8, an offset past a page's end). [`guard`] runs one
//! piece of work over the store where such a panic is caught and answered
//! as [`Error::StoreCorrupted`], which names the file and what to run.
//!
//! Invariants:
//! - guards sit at a few boundaries only: opening a [`crate::Monitor`],
//!   its public reads and writes, the jobs of its background tasks, and
//!   every operation on a stopped store (`offline`, `integrity`);
//! - a panic caught by a guard is logged once (`tracing`, with where it
//!   happened) and never printed by the default panic hook, so a command
//!   line user sees one line; panics outside a guard are printed as ever
//!   (the hook defers to the one installed before it);
//! - every corruption error leaving a guard is [`Error::StoreCorrupted`]
//!   (a record that does not decode, [`Error::Corrupt`], and redb's own
//!   `Corrupted` are turned into it), so callers match one variant.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use crate::error::{Error, Result};

thread_local! {
    /// Guards this thread is inside (guards nest).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The last panic caught by a guard on this thread, with its location.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once per process) a panic hook that keeps quiet inside a
/// guard and defers to the previous hook everywhere else.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                return previous(info);
            }
            let at = info
                .location()
                .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{at}", panic_message(info.payload()));
            LAST.with(|l| *l.borrow_mut() = Some(text));
        }));
    });
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f` (work over the store in `data_dir`, described by `what`,
/// e.g. "answering a query"); a panic inside it, and any corruption error
/// it returns, come back as [`Error::StoreCorrupted`]. Other errors pass
/// through unchanged.
pub fn guard<T>(data_dir: &Path, what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    match outcome {
        Ok(result) => result.map_err(|e| corrupted(data_dir, what, e)),
        Err(payload) => {
            let detail = LAST
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| panic_message(&*payload));
            tracing::debug!(what, %detail, "damaged bytes in the store: a read panicked");
            Err(Error::StoreCorrupted {
                path: super::db_path(data_dir),
                what,
                detail: format!("a read panicked: {detail}"),
            })
        }
    }
}

/// Runs `f` where a panic is caught, quietly: `Err(panic text)`. For
/// callers that go on after damaged bytes (the integrity check's scan).
pub fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    outcome.map_err(|payload| {
        LAST.with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| panic_message(&*payload))
    })
}

/// `e` as [`Error::StoreCorrupted`] when it says the store is damaged;
/// unchanged otherwise.
pub fn corrupted(data_dir: &Path, what: &'static str, e: Error) -> Error {
    match e {
        Error::Corrupt { table, detail } => Error::StoreCorrupted {
            path: super::db_path(data_dir),
            what,
            detail: format!("a {table} record does not decode: {detail}"),
        },
        Error::Storage(redb::Error::Corrupted(detail)) => Error::StoreCorrupted {
            path: super::db_path(data_dir),
            what,
            detail: format!("redb: {detail}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_store_corrupted_and_errors_pass_through() {
        let dir = Path::new("/data");
        let e = guard::<()>(dir, "testing", || panic!("bad bytes")).unwrap_err();
        assert_eq!(e.code(), "store_corrupted");
        let text = e.to_string();
        assert!(
            text.contains("bad bytes") && text.contains("--repair"),
            "{text}"
        );
        let e = guard::<()>(dir, "testing", || Err(Error::NotFound("x".into()))).unwrap_err();
        assert_eq!(e.code(), "not_found");
        let corrupt = || {
            Err::<(), _>(Error::Corrupt {
                table: "minute",
                detail: "short".into(),
            })
        };
        let e = guard(dir, "testing", corrupt).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StoreCorrupted {
                    what: "testing",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(catch(|| 1), Ok(1));
        assert!(catch(|| panic!("boom")).unwrap_err().contains("boom"));
        // Guards nest: the inner one answers, the outer sees an error.
        let e = guard(dir, "outer", || {
            guard::<()>(dir, "inner", || panic!("deep"))
        })
        .unwrap_err();
        assert!(
            matches!(e, Error::StoreCorrupted { what: "inner", .. }),
            "{e:?}"
        );
    }
}
