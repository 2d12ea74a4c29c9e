//! `audit search QUERY`: words are matched (stemmed, all of them) against
//! the records' plugin, action, resource, result and notes in the FTS5
//! index; time phrases restrict the records' time (UTC):
//! `today`, `yesterday`, `this week`, `last week` (the calendar week before
//! this one, Monday to Sunday), `this month`, `last month`, `last N days`
//! / `past N days` (rolling), `since YYYY-MM-DD`, `before YYYY-MM-DD`,
//! `on YYYY-MM-DD`.

use serde::Serialize;

const DAY: i64 = 86_400;

/// Words that say nothing about a record.
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "in", "of", "on", "at", "for", "to", "by", "was", "were", "is", "are",
    "what", "which", "when", "who", "that", "all", "and", "during", "from", "with",
];

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Query {
    /// Words matched against the index (all must match).
    pub terms: Vec<String>,
    /// Records at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Records before this time (unix seconds).
    pub until: Option<i64>,
    /// The time phrases understood, as written.
    pub phrases: Vec<String>,
}

fn start_of_day(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// Monday 00:00 UTC of the week holding `t` (1970-01-01 was a Thursday).
fn start_of_week(t: i64) -> i64 {
    let days = t.div_euclid(DAY);
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    (days - weekday) * DAY
}

fn start_of_month(t: i64, months_back: i32) -> Option<i64> {
    let d = time::OffsetDateTime::from_unix_timestamp(t).ok()?;
    let (mut y, mut m) = (d.year(), d.month() as i32);
    m -= months_back;
    while m < 1 {
        m += 12;
        y -= 1;
    }
    let month = time::Month::try_from(m as u8).ok()?;
    let date = time::Date::from_calendar_date(y, month, 1).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

/// `YYYY-MM-DD` as Unix seconds at 00:00 UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

impl Query {
    /// Splits `text` into time phrases and words, relative to `now`.
    pub fn parse(text: &str, now: i64) -> Query {
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let mut q = Query {
            terms: Vec::new(),
            since: None,
            until: None,
            phrases: Vec::new(),
        };
        let narrow = |q: &mut Query, since: i64, until: Option<i64>, phrase: String| {
            q.since = Some(q.since.map_or(since, |s| s.max(since)));
            if let Some(u) = until {
                q.until = Some(q.until.map_or(u, |x| x.min(u)));
            }
            q.phrases.push(phrase);
        };
        let mut i = 0;
        while i < words.len() {
            let w = words[i].as_str();
            let next = words.get(i + 1).map(String::as_str);
            let third = words.get(i + 2).map(String::as_str);
            let today = start_of_day(now);
            match (w, next) {
                ("today", _) => narrow(&mut q, today, None, "today".into()),
                ("yesterday", _) => narrow(&mut q, today - DAY, Some(today), "yesterday".into()),
                ("this", Some("week")) => {
                    narrow(&mut q, start_of_week(now), None, "this week".into());
                    i += 1;
                }
                ("last", Some("week")) => {
                    let this = start_of_week(now);
                    narrow(&mut q, this - 7 * DAY, Some(this), "last week".into());
                    i += 1;
                }
                ("this", Some("month")) => {
                    if let Some(s) = start_of_month(now, 0) {
                        narrow(&mut q, s, None, "this month".into());
                    }
                    i += 1;
                }
                ("last", Some("month")) => {
                    if let (Some(s), Some(e)) = (start_of_month(now, 1), start_of_month(now, 0)) {
                        narrow(&mut q, s, Some(e), "last month".into());
                    }
                    i += 1;
                }
                ("last" | "past", Some(n))
                    if n.parse::<i64>().is_ok()
                        && matches!(third, Some("days" | "day" | "hours" | "hour")) =>
                {
                    let n: i64 = n.parse().unwrap_or(0);
                    let unit = if third.is_some_and(|t| t.starts_with("hour")) {
                        3600
                    } else {
                        DAY
                    };
                    narrow(
                        &mut q,
                        now - n * unit,
                        None,
                        format!("{w} {n} {}", third.unwrap_or("days")),
                    );
                    i += 2;
                }
                ("since" | "after", Some(d)) if parse_date(d).is_some() => {
                    narrow(&mut q, parse_date(d).unwrap_or(0), None, format!("{w} {d}"));
                    i += 1;
                }
                ("before" | "until", Some(d)) if parse_date(d).is_some() => {
                    let t = parse_date(d).unwrap_or(0);
                    q.until = Some(q.until.map_or(t, |x| x.min(t)));
                    q.phrases.push(format!("{w} {d}"));
                    i += 1;
                }
                ("on", Some(d)) if parse_date(d).is_some() => {
                    let t = parse_date(d).unwrap_or(0);
                    narrow(&mut q, t, Some(t + DAY), format!("on {d}"));
                    i += 1;
                }
                _ => {
                    if !STOP_WORDS.contains(&w) {
                        q.terms.push(w.to_string());
                    }
                }
            }
            i += 1;
        }
        q
    }

    /// The FTS5 MATCH expression: every token of every term quoted (so no
    /// word is read as FTS syntax), all required; `None` without terms.
    pub fn fts_expression(&self) -> Option<String> {
        let tokens: Vec<String> = self
            .terms
            .iter()
            .flat_map(|t| {
                t.split(|c: char| !c.is_alphanumeric())
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
            })
            .collect();
        (!tokens.is_empty()).then(|| tokens.join(" AND "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Wednesday 2026-12-02 12:00 UTC.
    const NOW: i64 = 1_796_212_800;

    #[test]
    fn time_phrases() {
        assert_eq!(start_of_week(NOW), parse_date("2026-11-30").unwrap());
        let q = Query::parse("containers created last week", NOW);
        assert_eq!(q.terms, ["containers", "created"]);
        assert_eq!(q.since, parse_date("2026-11-23"));
        assert_eq!(q.until, parse_date("2026-11-30"));
        let q = Query::parse("failed today", NOW);
        assert_eq!((q.since, q.until), (parse_date("2026-12-02"), None));
        let q = Query::parse("bridge:vmbr0 in the last 3 days", NOW);
        assert_eq!(q.terms, ["bridge:vmbr0"]);
        assert_eq!(q.since, Some(NOW - 3 * DAY));
        assert_eq!(
            q.fts_expression().as_deref(),
            Some("\"bridge\" AND \"vmbr0\"")
        );
        let q = Query::parse("last month", NOW);
        assert_eq!(
            (q.since, q.until),
            (parse_date("2026-11-01"), parse_date("2026-12-01"))
        );
        assert_eq!(q.fts_expression(), None);
    }
}
