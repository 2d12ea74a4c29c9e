//! The offline base-system payload: a `tar.zst` of a bootstrapped Debian root
//! plus its `FILE.sha256`. [`build`] makes it on a build host (mmdebstrap,
//! cached by spec), [`extract`] verifies it and streams it into the target root in one pass,
//! beneath the target's directory fd.

pub mod build;
pub mod extract;
pub mod mirror;
pub mod spec;

use std::path::{Path, PathBuf};

pub use build::{build_payload, BuildError, BuildTool, PayloadInfo};
pub use extract::{
    extract_payload, extract_payload_with, ExpectedSha256, ExtractError, ExtractLimits,
    ExtractReport,
};
pub use mirror::{host_mirror, Mirror, MirrorError};
pub use spec::{Distribution, PayloadSpec, BASE_PACKAGES};

/// The checksum file that travels with a payload: `FILE.sha256`.
pub fn sidecar_path(payload: &Path) -> PathBuf {
    let mut name = payload.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// One line in `sha256sum` format: `<hex>  <file name>\n`.
pub fn sha256sum_line(sha256: &str, payload: &Path) -> String {
    let name = payload
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{sha256}  {name}\n")
}

/// The digest from `sha256sum` output (first field, 64 hex digits,
/// lower-cased); `None` when the text is not in that format.
pub fn parse_sha256sum(text: &str) -> Option<String> {
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_and_sha256sum_format() {
        let p = Path::new("/srv/base.tar.zst");
        assert_eq!(sidecar_path(p), Path::new("/srv/base.tar.zst.sha256"));
        let hex = "ab".repeat(32);
        let line = sha256sum_line(&hex, p);
        assert_eq!(line, format!("{hex}  base.tar.zst\n"));
        assert_eq!(parse_sha256sum(&line), Some(hex.clone()));
        assert_eq!(
            parse_sha256sum(&format!("{}  *x\n", hex.to_uppercase())),
            Some(hex)
        );
        assert_eq!(parse_sha256sum("abc  x"), None);
        assert_eq!(parse_sha256sum(""), None);
    }
}
