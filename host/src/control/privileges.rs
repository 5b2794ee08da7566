//! Least privilege (`director.user`): once the daemon has done what needs root (the TUN
//! device and its queues, XDP programs, the admin socket and the metrics listener), it gives
//! root up for good and runs on as that user, with no capabilities at all.
//!
//! The switch is `initgroups` + `setgid` + `setuid`. glibc applies each of them to every
//! thread of the process (the queues and the runtime already run), and a thread whose uids
//! all leave 0 loses its permitted and effective capabilities (capabilities(7), "Effect of
//! user ID changes on capabilities"; `PR_SET_KEEPCAPS` is never set). `capset` would not do:
//! it changes the calling thread only.
//!
//! What that costs is checked at load: `routes = "auto"` installs and removes routes while
//! running (CAP_NET_ADMIN), so it cannot go with `user`.

use std::ffi::CString;
use std::path::Path;

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Looks a user up by name in the password database.
pub fn lookup(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // Safety: an all-zero `passwd` is a valid value of a plain C struct (null pointers,
    // zero ids); getpwnam_r fills it in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // Safety: a NUL-terminated name, a `passwd` to fill and a buffer of `buf.len()` bytes
    // for its strings, all outliving the call; the result pointer is null or `&mut pw`.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 {
        return Err(format!(
            "cannot look user {name:?} up: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no user named {name:?}"));
    }
    Ok(User {
        name: name.to_string(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Gives root up for `user`: the admin socket at `socket` is given to it first (so that a
/// reload can still change its group and mode), then its groups, gid and uid are taken by
/// every thread. Checks the result: root cannot be taken back.
pub fn drop_to(user: &User, socket: &Path) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot drop root for user {:?}: {what}: {}",
            user.name,
            std::io::Error::last_os_error()
        )
    };
    let path = CString::new(socket.as_os_str().as_encoded_bytes())
        .map_err(|_| "bad socket path".to_string())?;
    // Safety: chown on a NUL-terminated path; -1 keeps the group.
    if unsafe { libc::chown(path.as_ptr(), user.uid, u32::MAX) } != 0 {
        return Err(fail(&format!("chown {}", socket.display())));
    }
    let name = CString::new(user.name.as_str()).map_err(|_| "bad user name".to_string())?;
    // Safety: initgroups reads a NUL-terminated name; glibc sets the groups of every thread.
    if unsafe { libc::initgroups(name.as_ptr(), user.gid) } != 0 {
        return Err(fail("initgroups"));
    }
    // Safety: setgid/setuid have no memory preconditions; glibc applies them to every thread.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // Safety: as above.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err(fail("setuid"));
    }
    // Safety: getters without preconditions; setuid(0) must fail now.
    let (uid, euid, back) = unsafe { (libc::getuid(), libc::geteuid(), libc::setuid(0)) };
    if (uid, euid) != (user.uid, user.uid) || (user.uid != 0 && back == 0) {
        return Err(format!(
            "dropping root for user {:?} did not hold (uid {uid}, euid {euid})",
            user.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup("root").map(|u| (u.uid, u.gid)), Ok((0, 0)));
        assert_eq!(
            lookup("no-such-user-here"),
            Err("no user named \"no-such-user-here\"".into())
        );
    }
}
