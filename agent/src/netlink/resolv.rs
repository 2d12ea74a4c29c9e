//! Writes `<root>/etc/resolv.conf` from the state's DNS servers and search
//! domains, atomically (temporary file, fsync, rename). systemd-resolved
//! over D-Bus is handled elsewhere; this is the plain-file fallback.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::NetlinkError;

/// glibc reads at most this many `nameserver` lines (MAXNS).
const GLIBC_MAX_NAMESERVERS: usize = 3;

/// The text of a resolv.conf for `servers` and `search` domains.
pub fn render_resolv_conf(servers: &[IpAddr], search: &[String]) -> Result<String, NetlinkError> {
    if let Some(bad) = search
        .iter()
        .find(|d| d.is_empty() || d.chars().any(char::is_whitespace))
    {
        return Err(NetlinkError::InvalidSearchDomain(bad.clone()));
    }
    if servers.len() > GLIBC_MAX_NAMESERVERS {
        tracing::warn!(
            count = servers.len(),
            "more than {GLIBC_MAX_NAMESERVERS} DNS servers: glibc uses only the first {GLIBC_MAX_NAMESERVERS}"
        );
    }
    let mut text =
        String::from("# Written by op-dbus-agent from state.json; local edits are overwritten.\n");
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    Ok(text)
}

/// Writes `<root>/etc/resolv.conf` (mode 0644) atomically. A symlink there
/// (e.g. to systemd-resolved's stub file) is replaced by a regular file.
pub fn write_resolv_conf(
    root: &Path,
    servers: &[IpAddr],
    search: &[String],
) -> Result<(), NetlinkError> {
    let text = render_resolv_conf(servers, search)?;
    let etc = root.join("etc");
    let path = etc.join("resolv.conf");
    let tmp = etc.join(format!(".resolv.conf.op-dbus.{}", std::process::id()));
    let fail = |path: &PathBuf| {
        let path = path.clone();
        move |source| NetlinkError::ResolvConf { path, source }
    };
    fs::create_dir_all(&etc).map_err(fail(&etc))?;
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(&path)(e));
    }
    // Make the rename itself durable.
    fs::File::open(&etc)
        .and_then(|dir| dir.sync_all())
        .map_err(fail(&etc))?;
    tracing::debug!(path = %path.display(), servers = servers.len(), "wrote resolv.conf");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<IpAddr> {
        vec![
            "10.0.0.53".parse().expect("ip"),
            "2001:db8::53".parse().expect("ip"),
        ]
    }

    #[test]
    fn writes_servers_and_search_atomically() {
        let root = tempfile::tempdir().expect("tempdir");
        let search = vec!["example.org".to_string(), "lab.example.org".to_string()];
        write_resolv_conf(root.path(), &servers(), &search).expect("write");
        let path = root.path().join("etc/resolv.conf");
        let text = fs::read_to_string(&path).expect("read back");
        assert_eq!(
            text,
            "# Written by op-dbus-agent from state.json; local edits are overwritten.\n\
             nameserver 10.0.0.53\nnameserver 2001:db8::53\nsearch example.org lab.example.org\n"
        );
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let leftovers: Vec<_> = fs::read_dir(root.path().join("etc"))
            .expect("list etc")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("resolv.conf")]);
    }

    #[test]
    fn replaces_a_symlink_with_a_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let etc = root.path().join("etc");
        fs::create_dir(&etc).expect("mkdir etc");
        let stub = root.path().join("stub-resolv.conf");
        fs::write(&stub, "nameserver 127.0.0.53\n").expect("write stub");
        std::os::unix::fs::symlink(&stub, etc.join("resolv.conf")).expect("symlink");
        write_resolv_conf(root.path(), &servers(), &[]).expect("write");
        let meta = fs::symlink_metadata(etc.join("resolv.conf")).expect("lstat");
        assert!(meta.file_type().is_file());
        assert_eq!(
            fs::read_to_string(&stub).expect("stub"),
            "nameserver 127.0.0.53\n"
        );
        let text = fs::read_to_string(etc.join("resolv.conf")).expect("read");
        assert!(!text.contains("search"));
    }

    #[test]
    fn rejects_search_domain_with_space() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = write_resolv_conf(root.path(), &servers(), &["a b".to_string()])
            .expect_err("space in domain");
        assert_eq!(
            err.to_string(),
            "invalid DNS search domain 'a b': it must be non-empty and contain no whitespace"
        );
        assert!(!root.path().join("etc/resolv.conf").exists());
    }
}
