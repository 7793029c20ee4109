//! The figures of `cargo xtask bench --peers` and how they are shown: per group of systems (local, SFTP, S3)
//! the median of every figure per system and the ratio MusicFS / peer, as a Markdown table (printed and
//! written to `report.md`), a self-contained HTML page with an inline SVG bar chart of the ratios
//! (`report.html`, no external JS or CSS) and, on request, JSON. A system that could not be measured keeps
//! its reason, shown in its column instead of figures.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

/// One figure taken per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Cold,
    ColdCpu,
    Cached,
    Warm,
    FirstByte,
    RandomP50,
    RandomP99,
    Find,
    ListLong,
    MountRead,
    MountLibrary,
    Rss,
}

impl Metric {
    pub const ALL: [Metric; 12] = [
        Metric::Cold,
        Metric::ColdCpu,
        Metric::Cached,
        Metric::Warm,
        Metric::FirstByte,
        Metric::RandomP50,
        Metric::RandomP99,
        Metric::Find,
        Metric::ListLong,
        Metric::MountRead,
        Metric::MountLibrary,
        Metric::Rss,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::Cold => "cold sequential read (GB/s)",
            Metric::ColdCpu => "client CPU for the cold read (s: user + system, the mount's processes)",
            Metric::Cached => "cached sequential read, same mount (GB/s)",
            Metric::Warm => "warm sequential read: a new mount over the cache the cold read filled (GB/s)",
            Metric::FirstByte => "time to first byte: open + 64 KiB (ms)",
            Metric::RandomP50 => "random 4 KiB read, p50 (ms)",
            Metric::RandomP99 => "random 4 KiB read, p99 (ms)",
            Metric::Find => "`find -type f` over the library, cold (s)",
            Metric::ListLong => "`ls -lR` over the library, after find (s)",
            Metric::MountRead => "mount time, read set (ms)",
            Metric::MountLibrary => "mount time, library, empty cache (ms)",
            Metric::Rss => "RSS after the reads (MB)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Metric::Cold => "cold_gbps",
            Metric::ColdCpu => "cold_cpu_secs",
            Metric::Cached => "cached_gbps",
            Metric::Warm => "warm_gbps",
            Metric::FirstByte => "first_byte_ms",
            Metric::RandomP50 => "random_p50_ms",
            Metric::RandomP99 => "random_p99_ms",
            Metric::Find => "find_secs",
            Metric::ListLong => "ls_lr_secs",
            Metric::MountRead => "mount_read_set_ms",
            Metric::MountLibrary => "mount_library_ms",
            Metric::Rss => "rss_mb",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Cold | Metric::Cached | Metric::Warm)
    }

    fn better(self) -> &'static str {
        if self.higher_is_better() { "higher" } else { "lower" }
    }
}

/// The figures of one run of one system.
pub type Figures = BTreeMap<Metric, f64>;

/// One system's runs, in the order they ran.
pub struct Column {
    pub name: &'static str,
    pub runs: Vec<Figures>,
    /// Why it was not measured, or why it stopped.
    pub failure: Option<String>,
    /// Why it has no library figures (`find`, `ls -lR`, library mount) from some run on.
    pub tree_failure: Option<String>,
}

impl Column {
    pub fn new(name: &'static str) -> Column {
        Column { name, runs: Vec::new(), failure: None, tree_failure: None }
    }

    /// The median of `metric` over the runs that have it.
    pub fn median(&self, metric: Metric) -> Option<f64> {
        let mut values: Vec<f64> = self.runs.iter().filter_map(|run| run.get(&metric).copied()).collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    }
}

/// MusicFS (the first column) and its peers on one kind of origin.
pub struct Group {
    pub title: String,
    pub columns: Vec<Column>,
    /// What a reader of the figures must know about the server they were measured on.
    pub notes: Vec<String>,
}

impl Group {
    /// MusicFS's median divided by `peer`'s, when both have one.
    fn ratio(&self, peer: &Column, metric: Metric) -> Option<f64> {
        let (ours, theirs) = (self.columns[0].median(metric)?, peer.median(metric)?);
        (theirs > 0.0).then(|| ours / theirs)
    }
}

/// The whole run.
pub struct Run {
    /// One line saying what was measured (sizes, pairs, binary).
    pub setup: String,
    pub groups: Vec<Group>,
    pub wall_secs: f64,
}

/// A figure with three significant digits.
fn number(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// Whether a ratio means MusicFS did better.
fn musicfs_better(metric: Metric, ratio: f64) -> bool {
    if metric.higher_is_better() { ratio > 1.0 } else { ratio < 1.0 }
}

/// The first line of a failure, short enough for a table cell.
fn short(why: &str) -> String {
    let line = why.lines().next().unwrap_or("").trim();
    if line.chars().count() > 240 { format!("{}…", line.chars().take(240).collect::<String>()) } else { line.into() }
}

/// The report as Markdown: the setup, then per group a table of medians and ratios and the failures.
pub fn markdown(run: &Run) -> String {
    let mut s = String::from("# MusicFS side by side with its peers\n\n");
    let _ = writeln!(s, "{}\n", run.setup);
    s += "Each figure is the median of the runs (n); systems ran in alternation, each run on a fresh mount with an \
          empty cache, except the warm read: a second mount over the cache the first one filled, as after a \
          restart (rclone keeps its VFS cache there; bindfs, sshfs and s3fs have none and read the origin again). \
          Ratio = MusicFS / peer: for GB/s higher is better, for times and memory lower is better; \
          ✓ marks a ratio where MusicFS does better, ✗ where it does worse.\n";
    for group in &run.groups {
        let _ = write!(s, "\n## {}\n\n| figure | better | {} |", group.title, group.columns[0].name);
        for peer in &group.columns[1..] {
            let _ = write!(s, " {0} | MusicFS / {0} |", peer.name);
        }
        s += "\n|---|---|---:|";
        s += &"---:|---:|".repeat(group.columns.len() - 1);
        s += "\n";
        for metric in Metric::ALL {
            let cell = |column: &Column| column.median(metric).map_or("—".into(), number);
            let _ = write!(s, "| {} | {} | {} |", metric.label(), metric.better(), cell(&group.columns[0]));
            for peer in &group.columns[1..] {
                let ratio = group.ratio(peer, metric).map_or("—".into(), |r| {
                    format!("{} {}", number(r), if musicfs_better(metric, r) { "✓" } else { "✗" })
                });
                let _ = write!(s, " {} | {ratio} |", cell(peer));
            }
            s += "\n";
        }
        let _ = write!(s, "| runs (n) | | {} |", group.columns[0].runs.len());
        for peer in &group.columns[1..] {
            let _ = write!(s, " {} | |", peer.runs.len());
        }
        s += "\n";
        for column in group.columns.iter().filter(|c| c.failure.is_some()) {
            let why = column.failure.as_deref().unwrap_or_default();
            let what = if column.runs.is_empty() { "not measured" } else { "stopped after the runs above" };
            let _ = write!(s, "\n- **{}**: {what}: {}", column.name, short(why));
        }
        for column in group.columns.iter().filter(|c| c.tree_failure.is_some()) {
            let why = column.tree_failure.as_deref().unwrap_or_default();
            let _ = write!(s, "\n- **{}**: no library figures from one run on: {}", column.name, short(why));
        }
        for note in &group.notes {
            let _ = write!(s, "\n- {note}");
        }
        s += "\n";
    }
    let _ = writeln!(s, "\nWall time of the whole run: {:.0} s.", run.wall_secs);
    s
}

/// The figures as JSON: per group and system the medians, every run, and the failure if any.
pub fn json(run: &Run) -> Value {
    let figures = |f: &Figures| -> Value { f.iter().map(|(m, v)| (m.key().to_owned(), json!(v))).collect() };
    let groups: Vec<Value> = run
        .groups
        .iter()
        .map(|group| {
            let systems: Vec<Value> = group
                .columns
                .iter()
                .map(|c| {
                    let medians: Figures = Metric::ALL.iter().filter_map(|&m| Some((m, c.median(m)?))).collect();
                    json!({ "system": c.name, "median": figures(&medians), "runs": c.runs.iter().map(figures).collect::<Vec<_>>(), "failure": c.failure, "library_failure": c.tree_failure })
                })
                .collect();
            json!({ "group": group.title, "systems": systems })
        })
        .collect();
    json!({ "setup": run.setup, "groups": groups, "wall_secs": run.wall_secs })
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report as one self-contained HTML page: per group a chart of the ratios and the table of figures.
pub fn html(run: &Run) -> String {
    let mut body = format!("<h1>MusicFS side by side with its peers</h1><p>{}</p>", esc(&run.setup));
    body += "<p>Median of n runs per system, systems in alternation, a fresh mount and an empty cache each run. \
             Bars show MusicFS / peer on a log scale around 1: <span class=good>green</span> where MusicFS does \
             better (higher GB/s, lower times and memory), <span class=bad>red</span> where it does worse.</p>";
    for group in &run.groups {
        let _ = write!(body, "<h2>{}</h2>{}", esc(&group.title), chart(group));
        body += "<table><tr><th>figure</th><th>better</th>";
        for (i, column) in group.columns.iter().enumerate() {
            let _ = write!(body, "<th>{}</th>", esc(column.name));
            if i > 0 {
                let _ = write!(body, "<th>MusicFS / {}</th>", esc(column.name));
            }
        }
        body += "</tr>";
        for metric in Metric::ALL {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td>", esc(metric.label()), metric.better());
            for (i, column) in group.columns.iter().enumerate() {
                let _ = write!(body, "<td class=n>{}</td>", column.median(metric).map_or("—".into(), number));
                if i > 0 {
                    match group.ratio(column, metric) {
                        Some(r) => {
                            let class = if musicfs_better(metric, r) { "good" } else { "bad" };
                            let _ = write!(body, "<td class='n {class}'>{}</td>", number(r));
                        }
                        None => body += "<td class=n>—</td>",
                    }
                }
            }
            body += "</tr>";
        }
        body += "<tr><td>runs (n)</td><td></td>";
        for (i, column) in group.columns.iter().enumerate() {
            let _ = write!(body, "<td class=n>{}</td>{}", column.runs.len(), if i > 0 { "<td></td>" } else { "" });
        }
        body += "</tr></table>";
        for column in group.columns.iter().filter(|c| c.failure.is_some()) {
            let why = column.failure.as_deref().unwrap_or_default();
            let what = if column.runs.is_empty() { "not measured" } else { "stopped after the runs above" };
            let _ = write!(body, "<p class=bad><b>{}</b>: {what}: {}</p>", esc(column.name), esc(&short(why)));
        }
        for column in group.columns.iter().filter(|c| c.tree_failure.is_some()) {
            let why = column.tree_failure.as_deref().unwrap_or_default();
            let _ = write!(
                body,
                "<p class=bad><b>{}</b>: no library figures from one run on: {}</p>",
                esc(column.name),
                esc(&short(why))
            );
        }
        for note in &group.notes {
            let _ = write!(body, "<p>{}</p>", esc(&note.replace("**", "")));
        }
    }
    let _ = write!(body, "<p>Wall time of the whole run: {:.0} s.</p>", run.wall_secs);
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>MusicFS side by side with its peers</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse;margin:1em 0}} \
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} td.n{{text-align:right;font-variant-numeric:tabular-nums}} \
.good{{color:#176317}} td.good{{background:#e3f6e3}} .bad{{color:#9a1b1b}} td.bad{{background:#fbe4e4}} svg text{{font:12px system-ui,sans-serif}}\
</style></head><body>{body}</body></html>"
    )
}

/// An SVG bar chart of every ratio of `group`: one bar per figure and peer, from 1 to the ratio on a log2
/// scale clamped to 1/64 … 64.
fn chart(group: &Group) -> String {
    const LABEL: f64 = 330.0;
    const PLOT: f64 = 420.0;
    const ROW: f64 = 18.0;
    const SPAN: f64 = 6.0; // log2 of the largest ratio shown
    let bars: Vec<(String, Metric, f64)> = Metric::ALL
        .iter()
        .flat_map(|&metric| {
            group.columns[1..].iter().filter_map(move |peer| {
                let ratio = group.ratio(peer, metric)?;
                Some((format!("{} · {}", metric.label(), peer.name), metric, ratio))
            })
        })
        .collect();
    if bars.is_empty() {
        return "<p>(no ratios to chart)</p>".into();
    }
    let height = ROW * bars.len() as f64 + 30.0;
    let width = LABEL + PLOT + 70.0;
    let x = |ratio: f64| LABEL + PLOT / 2.0 + ratio.log2().clamp(-SPAN, SPAN) / SPAN * (PLOT / 2.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
    );
    for (i, (label, metric, ratio)) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let (from, to) = (x(1.0), x(*ratio));
        let color = if musicfs_better(*metric, *ratio) { "#3a9a3a" } else { "#c44" };
        let _ = write!(
            svg,
            "<text x='{}' y='{}' text-anchor='end'>{}</text><rect x='{:.1}' y='{y}' width='{:.1}' height='{}' fill='{color}'/>\
             <text x='{:.1}' y='{}'>{}</text>",
            LABEL - 6.0,
            y + ROW - 6.0,
            esc(label),
            from.min(to),
            (to - from).abs().max(1.0),
            ROW - 4.0,
            from.max(to) + 4.0,
            y + ROW - 6.0,
            number(*ratio)
        );
    }
    let axis_y = ROW * bars.len() as f64 + 8.0;
    let _ = write!(svg, "<line x1='{0}' y1='0' x2='{0}' y2='{axis_y}' stroke='#333'/>", x(1.0));
    for tick in [1.0 / 64.0, 1.0 / 8.0, 1.0, 8.0, 64.0] {
        let label = if tick < 1.0 { format!("1/{}", 1.0 / tick) } else { format!("{tick}") };
        let _ = write!(svg, "<text x='{:.1}' y='{}' text-anchor='middle'>{label}×</text>", x(tick), axis_y + 16.0);
    }
    svg + "</svg>"
}
