//! The connection: one reader task that frames messages, routes replies to
//! waiting calls, answers the server's `echo` and feeds monitor channels; one
//! writer task that serializes outgoing messages.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::codec::FrameDecoder;
use super::ops::{decode_row, decode_transact_result, OpResult, Operation, Row};
use super::{OvsdbError, Result};

/// Default limit for one request; `transact` with a long `wait` gets its own.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Changes per table, per row UUID, as delivered by `monitor`.
pub type TableUpdates = BTreeMap<String, BTreeMap<String, RowUpdate>>;

/// One row's change: `old` absent for inserts, `new` absent for deletes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowUpdate {
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// Which changes a monitor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorSelect {
    pub initial: bool,
    pub insert: bool,
    pub delete: bool,
    pub modify: bool,
}

impl Default for MonitorSelect {
    fn default() -> Self {
        Self {
            initial: true,
            insert: true,
            delete: true,
            modify: true,
        }
    }
}

/// What to monitor in one table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorRequest {
    /// `None`: all columns.
    pub columns: Option<Vec<String>>,
    pub select: MonitorSelect,
}

impl MonitorRequest {
    pub fn columns<I: IntoIterator<Item = S>, S: Into<String>>(cols: I) -> Self {
        Self {
            columns: Some(cols.into_iter().map(Into::into).collect()),
            select: MonitorSelect::default(),
        }
    }

    fn to_json(&self) -> Value {
        let mut o = json!({"select": {
            "initial": self.select.initial,
            "insert": self.select.insert,
            "delete": self.select.delete,
            "modify": self.select.modify,
        }});
        if let Some(c) = &self.columns {
            o["columns"] = json!(c);
        }
        o
    }
}

/// A running monitor: the initial contents and a stream of later updates.
/// The stream ends (`next` returns `None`) when the connection closes.
#[derive(Debug)]
pub struct Monitor {
    pub id: String,
    pub initial: TableUpdates,
    updates: mpsc::UnboundedReceiver<TableUpdates>,
}

impl Monitor {
    /// The next update notification.
    pub async fn next(&mut self) -> Option<TableUpdates> {
        self.updates.recv().await
    }

    /// The next update, or `None` if none arrives within `timeout` or the connection closed.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<TableUpdates> {
        tokio::time::timeout(timeout, self.updates.recv())
            .await
            .ok()
            .flatten()
    }
}

type Reply = std::result::Result<Value, Value>;

#[derive(Default)]
struct Shared {
    /// `None` once the connection has closed.
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    monitors: Mutex<HashMap<String, mpsc::UnboundedSender<TableUpdates>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An OVSDB connection. Cheap calls from many tasks may share it (`&self`).
pub struct Client {
    out: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    next_monitor: AtomicU64,
    tasks: [JoinHandle<()>; 2],
    request_timeout: Duration,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `unix:PATH` (or a bare absolute path) → the socket path.
pub fn parse_address(addr: &str) -> Result<PathBuf> {
    let path = match addr.strip_prefix("unix:") {
        Some(p) => p,
        None if addr.starts_with('/') => addr,
        None => return Err(OvsdbError::Address(addr.to_string())),
    };
    if path.is_empty() {
        return Err(OvsdbError::Address(addr.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Decodes the `table-updates` object of a monitor reply or `update` notification.
pub fn decode_table_updates(v: &Value) -> Result<TableUpdates> {
    let tables = v
        .as_object()
        .ok_or_else(|| OvsdbError::Decode(format!("table-updates is not an object: {v}")))?;
    let mut out = TableUpdates::new();
    for (table, rows) in tables {
        let rows = rows
            .as_object()
            .ok_or_else(|| OvsdbError::Decode(format!("table-update is not an object: {rows}")))?;
        let mut t = BTreeMap::new();
        for (uuid, upd) in rows {
            let old = upd.get("old").map(decode_row).transpose()?;
            let new = upd.get("new").map(decode_row).transpose()?;
            t.insert(uuid.clone(), RowUpdate { old, new });
        }
        out.insert(table.clone(), t);
    }
    Ok(out)
}

impl Client {
    /// Connects to `unix:PATH`.
    pub async fn connect(addr: &str) -> Result<Client> {
        let path = parse_address(addr)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| OvsdbError::Connect {
                path: path.clone(),
                source,
            })?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps an already connected stream (tests use a socketpair).
    pub fn from_stream(stream: UnixStream) -> Client {
        let (rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            monitors: Mutex::default(),
        });
        let reader = tokio::spawn(read_loop(rd, shared.clone(), out.clone()));
        let writer = tokio::spawn(write_loop(wr, out_rx));
        Client {
            out,
            shared,
            next_id: AtomicU64::new(1),
            next_monitor: AtomicU64::new(1),
            tasks: [reader, writer],
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Changes the limit for each request.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Sends a raw JSON-RPC request and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_with_timeout(method, params, self.request_timeout)
            .await
    }

    async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.shared.pending).as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(OvsdbError::Disconnected),
        };
        let msg = json!({"method": method, "params": params, "id": id});
        tracing::debug!(%method, id, "ovsdb request");
        self.out
            .send(msg.to_string().into_bytes())
            .map_err(|_| OvsdbError::Disconnected)?;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(r) => r,
            Err(_) => {
                if let Some(p) = lock(&self.shared.pending).as_mut() {
                    p.remove(&id);
                }
                return Err(OvsdbError::Timeout(timeout));
            }
        };
        match reply {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(OvsdbError::Rpc {
                method: method.to_string(),
                error,
            }),
            Err(_) => Err(OvsdbError::Disconnected),
        }
    }

    /// Names of the databases the server holds.
    pub async fn list_dbs(&self) -> Result<Vec<String>> {
        let v = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(v.clone())
            .map_err(|_| OvsdbError::Decode(format!("list_dbs result: {v}")))
    }

    /// The schema of `db` as the server sends it.
    pub async fn get_schema(&self, db: &str) -> Result<Value> {
        self.call("get_schema", json!([db])).await
    }

    /// Round trip to the server; returns the time it took.
    pub async fn echo(&self) -> Result<Duration> {
        let start = Instant::now();
        let payload = json!(["op-dbus", start.elapsed().as_nanos() as u64]);
        let v = self.call("echo", payload.clone()).await?;
        if v != payload {
            return Err(OvsdbError::Protocol(format!(
                "echo returned {v}, sent {payload}"
            )));
        }
        Ok(start.elapsed())
    }

    /// Runs `ops` atomically in `db`. Any failed operation, or a failure at
    /// commit, is an [`OvsdbError::Operation`] naming its index.
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<Vec<OpResult>> {
        self.transact_with_timeout(db, ops, self.request_timeout)
            .await
    }

    /// [`transact`](Self::transact) with its own time limit (for `wait` operations).
    pub async fn transact_with_timeout(
        &self,
        db: &str,
        ops: &[Operation],
        timeout: Duration,
    ) -> Result<Vec<OpResult>> {
        let mut params = vec![json!(db)];
        params.extend(ops.iter().map(Operation::to_json));
        let result = self
            .call_with_timeout("transact", Value::Array(params), timeout)
            .await?;
        decode_transact_result(ops, &result)
    }

    /// Starts a monitor on `db`; `requests` maps table names to what to watch.
    pub async fn monitor(
        &self,
        db: &str,
        requests: &BTreeMap<String, MonitorRequest>,
    ) -> Result<Monitor> {
        let id = format!(
            "op-dbus-monitor-{}",
            self.next_monitor.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered before the request so no update can slip past.
        lock(&self.shared.monitors).insert(id.clone(), tx);
        let reqs: serde_json::Map<String, Value> = requests
            .iter()
            .map(|(t, r)| (t.clone(), r.to_json()))
            .collect();
        let initial = match self.call("monitor", json!([db, id, reqs])).await {
            Ok(v) => decode_table_updates(&v)?,
            Err(e) => {
                lock(&self.shared.monitors).remove(&id);
                return Err(e);
            }
        };
        Ok(Monitor {
            id,
            initial,
            updates: rx,
        })
    }

    /// Cancels a monitor (`monitor_cancel`); its stream ends.
    pub async fn monitor_cancel(&self, monitor_id: &str) -> Result<()> {
        let r = self.call("monitor_cancel", json!([monitor_id])).await;
        lock(&self.shared.monitors).remove(monitor_id);
        r.map(|_| ())
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = wr.write_all(&msg).await {
            tracing::debug!(error = %e, "ovsdb write failed");
            break;
        }
    }
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "ovsdb read failed");
                break;
            }
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => dispatch(&shared, &out, msg),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "closing OVSDB connection");
                    break 'outer;
                }
            }
        }
    }
    // Fail every waiting call and end every monitor stream.
    lock(&shared.pending).take();
    lock(&shared.monitors).clear();
}

fn dispatch(shared: &Shared, out: &mpsc::UnboundedSender<Vec<u8>>, msg: Value) {
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match method {
            "echo" => {
                let reply = json!({"id": id, "result": params, "error": null});
                let _ = out.send(reply.to_string().into_bytes());
            }
            "update" => {
                let (Some(mon), Some(updates)) =
                    (params.get(0).and_then(Value::as_str), params.get(1))
                else {
                    tracing::warn!(%params, "malformed OVSDB update notification");
                    return;
                };
                match decode_table_updates(updates) {
                    Ok(u) => {
                        if let Some(tx) = lock(&shared.monitors).get(mon) {
                            let _ = tx.send(u);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "undecodable OVSDB update"),
                }
            }
            other => {
                tracing::debug!(method = other, "ignoring OVSDB request");
                if !id.is_null() {
                    let reply = json!({"id": id, "result": null, "error": "unknown method"});
                    let _ = out.send(reply.to_string().into_bytes());
                }
            }
        }
        return;
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        tracing::debug!(%msg, "OVSDB reply without a known id");
        return;
    };
    let tx = lock(&shared.pending).as_mut().and_then(|p| p.remove(&id));
    let Some(tx) = tx else {
        tracing::debug!(id, "OVSDB reply for a request nobody waits for");
        return;
    };
    let reply = match msg.get("error") {
        Some(e) if !e.is_null() => Err(e.clone()),
        _ => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
    };
    let _ = tx.send(reply);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse_address("unix:/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(
            parse_address("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        for bad in ["unix:", "tcp:127.0.0.1:6640", "db.sock"] {
            assert!(
                matches!(parse_address(bad), Err(OvsdbError::Address(_))),
                "{bad}"
            );
        }
    }

    /// A fake server on a socketpair: sends replies split oddly, asks the
    /// client for an echo, and checks the client's answer.
    #[tokio::test]
    async fn answers_server_echo_and_frames_split_replies() {
        let (a, mut server) = UnixStream::pair().unwrap();
        let client = Client::from_stream(a);
        let srv = tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            let req = loop {
                if let Some(m) = dec.next_message().unwrap() {
                    break m;
                }
                let n = server.read(&mut buf).await.unwrap();
                dec.push(&buf[..n]);
            };
            assert_eq!(req["method"], "list_dbs");
            // server-initiated echo first, then the reply in two pieces
            server
                .write_all(br#"{"method":"echo","params":["ping"],"id":"e1"}"#)
                .await
                .unwrap();
            let reply = format!(r#"{{"id":{},"result":["A","B"],"error":null}}"#, req["id"]);
            let (x, y) = reply.as_bytes().split_at(7);
            server.write_all(x).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.write_all(y).await.unwrap();
            let echo = loop {
                if let Some(m) = dec.next_message().unwrap() {
                    break m;
                }
                let n = server.read(&mut buf).await.unwrap();
                dec.push(&buf[..n]);
            };
            echo
        });
        assert_eq!(client.list_dbs().await.unwrap(), vec!["A", "B"]);
        let echo = srv.await.unwrap();
        assert_eq!(echo, json!({"id": "e1", "result": ["ping"], "error": null}));
    }

    #[tokio::test]
    async fn closed_connection_fails_calls() {
        let (a, server) = UnixStream::pair().unwrap();
        let client = Client::from_stream(a);
        drop(server);
        let err = client.list_dbs().await.unwrap_err();
        assert!(matches!(err, OvsdbError::Disconnected), "{err:?}");
    }

    #[tokio::test]
    async fn rpc_error_is_reported() {
        let (a, mut server) = UnixStream::pair().unwrap();
        let client = Client::from_stream(a);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = server.read(&mut buf).await.unwrap();
            let req: Value = serde_json::from_slice(&buf[..n]).unwrap();
            let r = json!({"id": req["id"], "result": null, "error": "unknown database"});
            server.write_all(r.to_string().as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let err = client.get_schema("nope").await.unwrap_err();
        assert!(
            matches!(&err, OvsdbError::Rpc { method, .. } if method == "get_schema"),
            "{err:?}"
        );
    }
}
