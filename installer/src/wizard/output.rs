//! Writing the result: a temporary file in the destination's directory,
//! mode 0600, synced, then renamed over the destination, so an interrupted
//! wizard never leaves a partial or world-readable state.json.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Writes `text` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".state.json.")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming the temporary file to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_and_leaves_no_temp_file() {
        let t = tempfile::tempdir().expect("temp dir");
        let p = t.path().join("state.json");
        write_atomic(&p, "{}\n").expect("write");
        write_atomic(&p, "{\"version\": 1}\n").expect("overwrite");
        let md = std::fs::metadata(&p).expect("stat");
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "{\"version\": 1}\n"
        );
        assert_eq!(std::fs::read_dir(t.path()).expect("ls").count(), 1);
    }
}
