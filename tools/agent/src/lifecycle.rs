//! Creating, reloading and removing DM devices through the DM ioctls (the
//! `devicemapper` crate, with udev synchronisation): what `dmsetup create`,
//! `reload` + `resume` and `remove` do, for `activate` and `deactivate`.

use anyhow::{anyhow, Result};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};

use crate::device::{Device, DmTarget};

/// A DM device as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// Name and numbers.
    pub device: Device,
    /// How many openers it has (file systems, processes, other DM devices).
    pub open_count: i32,
}

fn control() -> Result<DM> {
    DM::new().map_err(|e| anyhow!("cannot open the DM control device: {e}"))
}

fn dm_name(name: &str) -> Result<&DmName> {
    DmName::new(name).map_err(|e| anyhow!("bad DM name `{name}`: {e}"))
}

fn ioctl_table(targets: &[DmTarget]) -> Vec<(u64, u64, String, String)> {
    targets
        .iter()
        .map(|t| (t.start, t.len, t.target_type.clone(), t.params.clone()))
        .collect()
}

/// The device named `name`, if there is one.
pub fn lookup(name: &str) -> Result<Option<Live>> {
    let dm = control()?;
    let id = DevId::Name(dm_name(name)?);
    let exists = dm
        .list_devices()
        .map_err(|e| anyhow!("cannot list DM devices: {e}"))?
        .iter()
        .any(|(n, _, _)| n.to_string() == name);
    if !exists {
        return Ok(None);
    }
    let info = dm
        .device_info(&id)
        .map_err(|e| anyhow!("cannot read the state of {name}: {e}"))?;
    let d = info.device();
    Ok(Some(Live {
        device: Device {
            name: name.to_string(),
            major: d.major,
            minor: d.minor,
        },
        open_count: info.open_count(),
    }))
}

/// Loads `targets` as the inactive table of `name` and resumes it (makes it
/// live). A refused table leaves the live one untouched.
fn load_and_resume(dm: &DM, name: &str, targets: &[DmTarget]) -> Result<()> {
    let id = DevId::Name(dm_name(name)?);
    dm.table_load(&id, &ioctl_table(targets), DmOptions::default())
        .map_err(|e| {
            anyhow!("the kernel refused the table of {name} ({e}); its reason is in the kernel log (dmesg)")
        })?;
    dm.device_suspend(&id, DmOptions::default())
        .map_err(|e| anyhow!("cannot resume {name}: {e}"))?;
    Ok(())
}

/// Creates device `name` with the table `targets` and makes it live. If the
/// table is refused, the empty device is removed again: nothing is left.
pub fn create(name: &str, targets: &[DmTarget]) -> Result<Device> {
    let dm = control()?;
    let info = dm
        .device_create(dm_name(name)?, None, DmOptions::default())
        .map_err(|e| anyhow!("cannot create device {name}: {e}"))?;
    if let Err(e) = load_and_resume(&dm, name, targets) {
        let id = DevId::Name(dm_name(name)?);
        if let Err(r) = dm.device_remove(&id, DmOptions::default()) {
            return Err(e.context(format!("and removing the half-made {name} failed: {r}")));
        }
        return Err(e);
    }
    let d = info.device();
    Ok(Device {
        name: name.to_string(),
        major: d.major,
        minor: d.minor,
    })
}

/// Replaces the live table of `name` by `targets` (load, then resume).
pub fn reload(name: &str, targets: &[DmTarget]) -> Result<()> {
    load_and_resume(&control()?, name, targets)
}

/// Removes device `name`. With `force`, its table is first replaced by one
/// that fails all I/O and the removal is deferred until the last opener
/// closes it (`dmsetup remove --force --deferred`).
pub fn remove(name: &str, force: bool, len: u64) -> Result<()> {
    let dm = control()?;
    let id = DevId::Name(dm_name(name)?);
    let mut options = DmOptions::default();
    if force {
        let error = DmTarget {
            start: 0,
            len,
            target_type: "error".into(),
            params: String::new(),
        };
        load_and_resume(&dm, name, &[error])?;
        options = options.set_flags(DmFlags::DM_DEFERRED_REMOVE);
    }
    dm.device_remove(&id, options)
        .map_err(|e| anyhow!("cannot remove {name}: {e}"))?;
    Ok(())
}
