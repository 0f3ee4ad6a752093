//! Talking to the kernel about one device's table: sending an upload plan's
//! windows and reading the live table back, with every refusal (the
//! module's status and text, or the genetlink core's error) turned into a
//! [`KernelRefusal`].

use std::fmt;
use std::io;

use anyhow::Result;

use crate::device::Device;
use crate::netlink::{self, Channel, Outcome};
use crate::plan::{UploadPlan, Window};
use crate::readback::TableImage;
use crate::wire::PathStats;

/// The kernel (module or genetlink core) said no. The command line exits
/// with code 2 for it.
#[derive(Debug)]
pub struct KernelRefusal(pub String);

impl fmt::Display for KernelRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelRefusal {}

/// The C library's text for `errno`, without Rust's " (os error N)".
pub fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn refusal(w: &Window, reason: &str, errno: i32) -> anyhow::Error {
    let hint = match errno {
        libc::EPERM | libc::EACCES => "; run as root (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)",
        libc::EOPNOTSUPP => "; does the loaded dm_switch module speak this ABI?",
        _ => "",
    };
    KernelRefusal(format!(
        "kernel refused window at region {}: {reason} ({}){hint}",
        w.offset,
        netlink::errno_name(errno)
    ))
    .into()
}

/// Sends the windows of `plan` in order, stopping at the first refusal.
/// `sent` is called after each accepted window.
pub fn send_windows(
    ch: &mut Channel,
    plan: &UploadPlan,
    mut sent: impl FnMut(&Window),
) -> Result<()> {
    for w in &plan.windows {
        let outcome = ch
            .send_window(plan.payload(w)?)
            .map_err(|e| e.context(format!("window at region {}", w.offset)))?;
        match outcome {
            Outcome::Response(r) if r.status == 0 => {}
            Outcome::Response(r) => {
                let errno = i32::try_from(r.status).unwrap_or(i32::MAX);
                let reason = if r.err_str.is_empty() {
                    strerror(errno)
                } else {
                    r.err_str
                };
                return Err(refusal(w, &reason, errno));
            }
            Outcome::CoreError(errno, text) => {
                let reason = text.unwrap_or_else(|| strerror(errno));
                return Err(refusal(w, &reason, errno));
            }
        }
        sent(w);
    }
    Ok(())
}

/// Reads the I/O the live target of `dev` sent to each path (a netlink
/// dump): one record per path.
pub fn read_path_stats(ch: &mut Channel, dev: &Device) -> Result<Vec<PathStats>> {
    ch.path_stats(dev.major, dev.minor)?
        .map_err(|(errno, text)| {
            KernelRefusal(format!(
                "kernel refused to read the path statistics of {}: {} ({})",
                dev.name,
                text.unwrap_or_else(|| strerror(errno)),
                netlink::errno_name(errno)
            ))
            .into()
        })
}

/// Reads the live table of `dev` back (a netlink dump).
pub fn read_back(ch: &mut Channel, dev: &Device) -> Result<TableImage> {
    match ch.dump(dev.major, dev.minor)? {
        Ok(windows) => TableImage::from_windows(&windows)
            .map_err(|e| anyhow::anyhow!("{} ({}:{}): {e}", dev.name, dev.major, dev.minor)),
        Err((errno, text)) => Err(KernelRefusal(format!(
            "kernel refused to read {} back: {} ({})",
            dev.name,
            text.unwrap_or_else(|| strerror(errno)),
            netlink::errno_name(errno)
        ))
        .into()),
    }
}
