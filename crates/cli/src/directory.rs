//! `cloudsignal directory status`: each directory source's last sync, read from the data
//! directory's store (works while `cloudsignal serve` runs).

use anyhow::Result;
use cloudsignal_control::directory::sync::Status;
use std::path::Path;

/// Prints the statuses; `Ok(false)` when a source's last sync failed or was refused.
pub(crate) fn status(data_dir: &Path, json: bool) -> Result<bool> {
    let all = cloudsignal_control::directory_status_offline(data_dir)?;
    let healthy = all.iter().all(|s| s.error.is_none());
    #[allow(clippy::print_stdout)]
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() {
        println!("No directory has synced yet (configure [[directories]] in the config file of `cloudsignal serve`).");
    } else {
        print!("{}", table(&all, cloudsignal_control::unix_now().secs()));
    }
    Ok(healthy)
}

fn ago(now: u64, at: Option<u64>) -> String {
    match at {
        None => "never".into(),
        Some(t) => match now.saturating_sub(t) {
            s if s < 120 => format!("{s} s ago"),
            s if s < 7200 => format!("{} min ago", s / 60),
            s => format!("{} h ago", s / 3600),
        },
    }
}

/// The human table.
fn table(all: &[Status], now: u64) -> String {
    let mut rows = vec![[
        "SOURCE".to_owned(),
        "LAST SYNC".into(),
        "TOOK".into(),
        "ACTIVE".into(),
        "DISABLED".into(),
        "REMOVED".into(),
        "LAST CHANGES".into(),
        "STATUS".into(),
    ]];
    for s in all {
        let c = &s.changes;
        rows.push([
            s.source.clone(),
            ago(now, s.last_success),
            s.duration_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            s.users.active.to_string(),
            s.users.disabled.to_string(),
            s.users.removed.to_string(),
            format!(
                "+{} -{} disabled {} groups {} closed {}",
                c.added, c.removed, c.disabled, c.groups_changed, s.closed_sessions
            ),
            match &s.error {
                None => "ok".into(),
                Some(e) => format!("FAILING ({}x): {e}", s.consecutive_failures),
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_failed() {
        let ok = Status {
            source: "corp".into(),
            last_success: Some(990),
            duration_ms: Some(812),
            ..Status::default()
        };
        let failing = Status {
            source: "ad".into(),
            error: Some("connecting to ldap://dc1: refused".into()),
            consecutive_failures: 3,
            ..Status::default()
        };
        let t = table(&[ok, failing], 1000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SOURCE"));
        assert!(
            lines[1].contains("10 s ago")
                && lines[1].contains("812 ms")
                && lines[1].ends_with("ok")
        );
        assert!(lines[2].contains("never") && lines[2].contains("FAILING (3x): connecting"));
    }
}
