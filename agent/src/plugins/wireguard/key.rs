//! WireGuard keys: base64 <-> hex (the UAPI form), generating a private key
//! into a root-only file, and deriving the public key with `wg pubkey`.

use std::path::Path;

use anyhow::{bail, Context as _};
use opdbus_common::rootfs::RootDir;
use opdbus_common::Task;

/// The all-zero key wireguard-go reports when none is set.
pub const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode(bytes: &[u8; 32]) -> String {
    let mut out = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn decode(s: &str) -> anyhow::Result<[u8; 32]> {
    if !opdbus_state::validate::is_wg_key(s) {
        bail!("not a WireGuard key (44 characters of base64)");
    }
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(33);
    for c in s.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|x| *x == c).unwrap_or(0) as u64;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out.truncate(32);
    out.try_into()
        .map_err(|_| anyhow::anyhow!("not a WireGuard key (decodes to the wrong length)"))
}

pub fn base64_to_hex(s: &str) -> anyhow::Result<String> {
    Ok(hex::encode(decode(s)?))
}

pub fn hex_to_base64(h: &str) -> anyhow::Result<String> {
    let v = hex::decode(h).context("not hex")?;
    let a: [u8; 32] = v
        .try_into()
        .map_err(|_| anyhow::anyhow!("a key of the wrong length"))?;
    Ok(encode(&a))
}

/// Reads the private key from `path` under `root`; `Ok(None)` when the file
/// does not exist. The error never contains the file's contents.
pub fn read_private(root: &Path, path: &str) -> anyhow::Result<Option<String>> {
    let dir = RootDir::open(root).with_context(|| format!("opening {}", root.display()))?;
    match dir.read_to_string(path) {
        Ok(s) => {
            let k = s.trim();
            if !opdbus_state::validate::is_wg_key(k) {
                bail!(
                    "{path} does not hold a WireGuard private key (44 characters of base64, \
                     as `wg genkey` writes); replace it, or delete it to have one generated"
                );
            }
            Ok(Some(k.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

/// Writes a new private key to `path` (0600, its directory 0700 when made).
pub fn generate(root: &Path, path: &str) -> anyhow::Result<String> {
    let mut k = [0u8; 32];
    getrandom(&mut k)?;
    // Curve25519 clamping, as `wg genkey` does.
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    let b64 = encode(&k);
    let dir = RootDir::open(root).with_context(|| format!("opening {}", root.display()))?;
    if let Some(parent) = Path::new(path).parent() {
        dir.create_dir_all(parent, 0o700)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    dir.write_atomic(path, format!("{b64}\n").as_bytes(), 0o600, Some((0, 0)))
        .with_context(|| format!("writing the private key to {path}"))?;
    Ok(b64)
}

fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("reading /dev/urandom")
}

/// The public key of `private` (`wg pubkey`), or `None` when `wg` is missing.
pub fn public_of(private: &str) -> Option<String> {
    let out = Task::new("wg")
        .arg("pubkey")
        .stdin(format!("{private}\n"))
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    opdbus_state::validate::is_wg_key(&s).then_some(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        let k = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let h = base64_to_hex(k).unwrap();
        assert_eq!(
            h,
            "c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038"
        );
        assert_eq!(hex_to_base64(&h).unwrap(), k);
        assert_eq!(hex_to_base64(&"00".repeat(32)).unwrap(), ZERO_KEY);
    }

    #[test]
    fn generated_key_is_private_and_valid() {
        let t = tempfile::tempdir().unwrap();
        let k = generate(t.path(), "/etc/wireguard/wg0.key").unwrap();
        assert!(opdbus_state::validate::is_wg_key(&k));
        let p = t.path().join("etc/wireguard/wg0.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            read_private(t.path(), "/etc/wireguard/wg0.key").unwrap(),
            Some(k)
        );
    }
}
