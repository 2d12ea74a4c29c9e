//! Typed `transact` operations (RFC 7047 section 5.2) and their results.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{Datum, OvsdbError, Result};

/// Column name → value.
pub type Row = BTreeMap<String, Datum>;

/// Comparison in a `where` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Gt => ">",
            Function::Ge => ">=",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One `[column, function, value]` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Datum,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Datum>) -> Self {
        Self {
            column: column.into(),
            function,
            value: value.into(),
        }
    }

    pub fn eq(column: impl Into<String>, value: impl Into<Datum>) -> Self {
        Self::new(column, Function::Eq, value)
    }

    /// `_uuid == ["uuid", u]`.
    pub fn uuid(u: impl Into<String>) -> Self {
        Self::new("_uuid", Function::Eq, Datum::uuid(u))
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// Mutation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One `[column, mutator, value]` mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Datum,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Datum>) -> Self {
        Self {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a `transact` request.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        /// Lets later operations refer to the new row as `["named-uuid", name]`.
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Comment(String),
}

fn row_json(row: &Row) -> Value {
    Value::Object(
        row.iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<Map<_, _>>(),
    )
}

fn conds_json(c: &[Condition]) -> Value {
    Value::Array(c.iter().map(Condition::to_json).collect())
}

impl Operation {
    /// The `op` member (`insert`, `select`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Comment(_) => "comment",
        }
    }

    pub fn to_json(&self) -> Value {
        let mut o = match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut o = json!({"table": table, "row": row_json(row)});
                if let Some(n) = uuid_name {
                    o["uuid-name"] = json!(n);
                }
                o
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut o = json!({"table": table, "where": conds_json(conditions)});
                if let Some(c) = columns {
                    o["columns"] = json!(c);
                }
                o
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => json!({"table": table, "where": conds_json(conditions), "row": row_json(row)}),
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({
                "table": table,
                "where": conds_json(conditions),
                "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>(),
            }),
            Operation::Delete { table, conditions } => {
                json!({"table": table, "where": conds_json(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                let mut o = json!({
                    "table": table,
                    "where": conds_json(conditions),
                    "columns": columns,
                    "until": match until { WaitUntil::Equal => "==", WaitUntil::NotEqual => "!=" },
                    "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
                });
                if let Some(t) = timeout_ms {
                    o["timeout"] = json!(t);
                }
                o
            }
            Operation::Comment(c) => json!({"comment": c}),
        };
        o["op"] = json!(self.name());
        o
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpResult {
    /// `insert`: the new row's UUID.
    pub uuid: Option<String>,
    /// `update`, `mutate`, `delete`: rows matched.
    pub count: Option<u64>,
    /// `select`: the rows.
    pub rows: Option<Vec<Row>>,
}

impl OpResult {
    pub fn rows(&self) -> &[Row] {
        self.rows.as_deref().unwrap_or(&[])
    }
}

/// Decodes a row object (`{"col": value, ...}`).
pub fn decode_row(v: &Value) -> Result<Row> {
    let obj = v
        .as_object()
        .ok_or_else(|| OvsdbError::Decode(format!("row is not an object: {v}")))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Datum::from_json(v)?)))
        .collect()
}

/// Checks a `transact` result array against the operations sent: every
/// element's `error`, and the extra trailing error element for commit failures.
pub fn decode_transact_result(ops: &[Operation], result: &Value) -> Result<Vec<OpResult>> {
    let items = result
        .as_array()
        .ok_or_else(|| OvsdbError::Decode(format!("transact result is not an array: {result}")))?;
    for (index, item) in items.iter().enumerate() {
        if let Some(err) = item.get("error").filter(|e| !e.is_null()) {
            let op = ops.get(index).map_or("commit", Operation::name);
            return Err(OvsdbError::Operation {
                index,
                op: op.to_string(),
                error: err.as_str().map_or_else(|| err.to_string(), str::to_string),
                details: item
                    .get("details")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
    }
    if items.len() < ops.len() {
        return Err(OvsdbError::Decode(format!(
            "transact returned {} results for {} operations",
            items.len(),
            ops.len()
        )));
    }
    items
        .iter()
        .take(ops.len())
        .map(|item| {
            let mut r = OpResult::default();
            if let Some(u) = item.get("uuid") {
                r.uuid = Datum::from_json(u)?.as_str().map(str::to_string);
            }
            r.count = item.get("count").and_then(Value::as_u64);
            if let Some(rows) = item.get("rows").and_then(Value::as_array) {
                r.rows = Some(rows.iter().map(decode_row).collect::<Result<_>>()?);
            }
            Ok(r)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_operations() {
        let op = Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![Condition::uuid("r")],
            mutations: vec![Mutation::new(
                "bridges",
                Mutator::Insert,
                Datum::named_uuid("b"),
            )],
        };
        assert_eq!(
            op.to_json(),
            json!({"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", "r"]]],
                   "mutations": [["bridges", "insert", ["named-uuid", "b"]]]})
        );
        let ins = Operation::Insert {
            table: "Bridge".into(),
            row: Row::from([("name".into(), Datum::atom("br0"))]),
            uuid_name: Some("b".into()),
        };
        assert_eq!(
            ins.to_json(),
            json!({"op": "insert", "table": "Bridge", "row": {"name": "br0"}, "uuid-name": "b"})
        );
    }

    #[test]
    fn checks_every_error_and_the_trailing_one() {
        let ops = vec![
            Operation::Comment("a".into()),
            Operation::Select {
                table: "Bridge".into(),
                conditions: vec![],
                columns: None,
            },
        ];
        let ok = decode_transact_result(&ops, &json!([{}, {"rows": [{"name": "br0"}]}])).unwrap();
        assert_eq!(ok[1].rows()[0]["name"].as_str(), Some("br0"));

        let err = decode_transact_result(
            &ops,
            &json!([{}, {"error": "syntax error", "details": "bad"}]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, OvsdbError::Operation { index: 1, op, .. } if op == "select"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "OVSDB operation 1 (select) failed: syntax error (bad)"
        );

        let err = decode_transact_result(
            &ops,
            &json!([{}, {"rows": []}, {"error": "referential integrity violation"}]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, OvsdbError::Operation { index: 2, op, .. } if op == "commit"),
            "{err:?}"
        );
        assert!(decode_transact_result(&ops, &json!([{}])).is_err());
    }
}
