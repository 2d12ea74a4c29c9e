//! The agent's non-network plugins, one file per concept. Each maps its
//! section of state.json to a desired value, queries only what it names,
//! diffs purely and applies through one adapter (D-Bus, files, commands).

pub mod host;
pub mod network;
pub mod packages;
pub mod proxmox;
pub mod storage;
pub mod systemd;
pub mod users;

/// Applies `f` to each action in order, collecting one result per action.
pub(crate) async fn each<'a, A, F, Fut>(
    actions: &'a [A],
    mut f: F,
) -> Vec<crate::engine::ActionResult>
where
    F: FnMut(&'a A) -> Fut,
    Fut: std::future::Future<Output = crate::engine::ActionResult>,
{
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        out.push(f(a).await);
    }
    out
}
