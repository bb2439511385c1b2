//! Prometheus metrics in text format, without a metrics crate: labelled counters, gauges and
//! fixed-bucket histograms behind small locks (updated once per batch or request).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS_SECONDS.len()];
        }
        for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    commands: Mutex<BTreeMap<(String, String), u64>>,
    events_appended: AtomicU64,
    apply_seconds: Mutex<Histogram>,
    /// By route template (a fixed set) and status code (a handful): bounded by construction.
    query_seconds: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    projection_position: AtomicU64,
    head_position: AtomicU64,
    /// Consumer lag by (topic, partition): high watermark minus the next offset to consume.
    consumer_lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Metrics {
    /// Counts a command outcome (`accepted`, `rejected` with its code, `duplicate`).
    pub fn command(&self, outcome: &str, code: &str) {
        let mut commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        *commands
            .entry((outcome.to_string(), code.to_string()))
            .or_default() += 1;
    }

    pub fn events_appended(&self, count: u64) {
        self.events_appended.fetch_add(count, Ordering::Relaxed);
    }

    pub fn apply_batch(&self, seconds: f64) {
        self.apply_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(seconds);
    }

    pub fn query(&self, route: &'static str, code: u16, seconds: f64) {
        let mut queries = self.query_seconds.lock().unwrap_or_else(|p| p.into_inner());
        queries.entry((route, code)).or_default().observe(seconds);
    }

    pub fn positions(&self, projection: u64, head: u64) {
        self.projection_position
            .store(projection, Ordering::Relaxed);
        self.head_position.store(head, Ordering::Relaxed);
    }

    /// Records the consumer lag of one partition.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_string(), partition), lag);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP csp_ledger_commands_total Commands by outcome and rejection code."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_commands_total counter");
        for ((outcome, code), count) in self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "csp_ledger_commands_total{{outcome=\"{outcome}\",code=\"{code}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP csp_ledger_events_appended_total Events appended to the log by this process."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_events_appended_total counter");
        let _ = writeln!(
            out,
            "csp_ledger_events_appended_total {}",
            self.events_appended.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP csp_ledger_apply_seconds Time to decide and durably append one group commit."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_apply_seconds histogram");
        write_histogram(
            &mut out,
            "csp_ledger_apply_seconds",
            "",
            &self.apply_seconds.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let _ = writeln!(
            out,
            "# HELP csp_ledger_query_seconds Time to answer a read, by route template and status code."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_query_seconds histogram");
        for ((route, code), histogram) in self
            .query_seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            write_histogram(
                &mut out,
                "csp_ledger_query_seconds",
                &format!("route=\"{}\",code=\"{code}\"", escape_label(route)),
                histogram,
            );
        }
        let _ = writeln!(
            out,
            "# HELP csp_ledger_projection_position Log position the read models reflect."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_projection_position gauge");
        let _ = writeln!(
            out,
            "csp_ledger_projection_position {}",
            self.projection_position.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP csp_ledger_head_position Last durable log position."
        );
        let _ = writeln!(out, "# TYPE csp_ledger_head_position gauge");
        let _ = writeln!(
            out,
            "csp_ledger_head_position {}",
            self.head_position.load(Ordering::Relaxed)
        );
        let lags = self.consumer_lag.lock().unwrap_or_else(|p| p.into_inner());
        if !lags.is_empty() {
            let _ = writeln!(out, "# HELP csp_ledger_consumer_lag Messages of the commands topic not yet applied, by partition.");
            let _ = writeln!(out, "# TYPE csp_ledger_consumer_lag gauge");
            for ((topic, partition), lag) in lags.iter() {
                let _ = writeln!(
                    out,
                    "csp_ledger_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
                    escape_label(topic)
                );
            }
        }
        out
    }
}

/// A label value in the Prometheus text format: `\`, `"` and newlines escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn write_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, bound) in BUCKETS_SECONDS.iter().enumerate() {
        let count = histogram.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        histogram.count
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", histogram.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", histogram.count);
}

#[cfg(test)]
mod escape_tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape_label("a\"}x\\\nb"), "a\\\"}x\\\\\\nb");
    }
}
