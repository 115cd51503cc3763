//! A whole saved log through the OOM parser, as a stream with bounded
//! memory: lines are read one at a time and cut at [`MAX_LINE`] (a 10 MB
//! line or `/dev/zero` costs no more than a short one); a line a terminal
//! or mail client wrapped is joined back; a log printed newest first (log
//! viewers' exports) is put back in order; several hosts in one file stay
//! apart (the parser routes by host).

use std::collections::VecDeque;
use std::io::BufRead;

use super::json::{self, Provenance};
use super::parse_line;
use super::wrap::{PADDING_RUN, collapse_padding, join, may_continue};
use crate::oom::lines;
use crate::oom::{InputLine, OomReport, Parser, ParserStats, Stamp, UnusedLine};

/// The longest line kept; the rest of a longer one is skipped and counted.
pub const MAX_LINE: usize = 64 * 1024;
/// Lines looked at before deciding a log's order.
const SNIFF_LINES: usize = 512;
/// Lines held to reverse a newest-first log; more are put back in order a
/// chunk at a time.
const MAX_REVERSED: usize = 200_000;
/// A JSON record's source marks count this many lines before or after its
/// message (a pretty-printed record spans a few dozen lines).
const JSON_WINDOW: u64 = 40;
/// Programs that kill processes for memory from user space: their
/// messages are not the kernel's kills, and a log holding only them is
/// told so.
static USER_SPACE_KILLERS: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
    aho_corasick::AhoCorasick::new([
        "oomd",
        "earlyoom",
        "nohang",
        "OOMController",
        "low-memory-monitor",
    ])
    .unwrap_or_else(|e| unreachable!("fixed patterns: {e}"))
});

/// What the reader hands out.
#[derive(Debug)]
pub enum ReadItem {
    Report(Box<OomReport>),
    /// An OOM-looking line that made no report (with `explain` on).
    Unused(UnusedLine),
}

/// What the reader counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadStats {
    /// Physical lines read.
    pub lines: u64,
    /// Lines longer than [`MAX_LINE`] (cut).
    pub cut_lines: u64,
    /// Wrapped lines joined back.
    pub joined_lines: u64,
    /// The log was newest first.
    pub newest_first: bool,
    /// Lines from a user-space OOM killer (not the kernel's kills).
    pub user_space_killer_lines: u64,
    pub parser: ParserStats,
}

/// A logical line, owned: held while it may still be continued, or while
/// the log's order is decided.
#[derive(Debug, Clone)]
struct Held {
    message: String,
    /// A JSON record's value whose source is still to be weighed.
    json: Option<(Provenance, u64)>,
    host: Option<String>,
    caller: Option<String>,
    from_kernel: bool,
    stamp: Stamp,
}

impl Held {
    fn input(&self) -> InputLine<'_> {
        InputLine {
            text: &self.message,
            from_kernel: self.from_kernel,
            caller: self.caller.as_deref(),
            host: self.host.as_deref(),
            stamp: self.stamp,
        }
    }
}

#[derive(Debug)]
enum Order {
    Sniffing(Vec<Held>),
    OldestFirst,
    NewestFirst(Vec<Held>),
}

/// Reads a saved log and yields its kills (and, explaining, its unused
/// OOM-looking lines) as it goes.
#[derive(Debug)]
pub struct LogReader<R> {
    input: R,
    year: i64,
    parser: Parser,
    line: Vec<u8>,
    /// A line that may continue on the next physical line.
    pending: Option<Held>,
    order: Order,
    /// Lines held behind a JSON value whose record's source is not known
    /// yet (the marks may come after it).
    waiting: VecDeque<Held>,
    /// Line numbers of JSON source marks seen lately: (line, kernel, echo).
    marks: VecDeque<(u64, Provenance)>,
    out: VecDeque<ReadItem>,
    stats: ReadStats,
    done: bool,
}

impl<R: BufRead> LogReader<R> {
    pub fn new(input: R, year: i64) -> Self {
        Self::with_parser(input, year, Parser::new())
    }

    /// A reader that also yields each unused OOM-looking line, and why.
    pub fn explaining(input: R, year: i64) -> Self {
        Self::with_parser(input, year, Parser::explaining())
    }

    fn with_parser(input: R, year: i64, parser: Parser) -> Self {
        Self {
            input,
            year,
            parser,
            line: Vec::new(),
            pending: None,
            order: Order::Sniffing(Vec::new()),
            waiting: VecDeque::new(),
            marks: VecDeque::new(),
            out: VecDeque::new(),
            stats: ReadStats::default(),
            done: false,
        }
    }

    pub fn stats(&self) -> ReadStats {
        ReadStats {
            parser: self.parser.stats(),
            ..self.stats
        }
    }

    /// Unused OOM-looking lines so far, by reason.
    pub fn unused_counts(&self) -> impl Iterator<Item = (crate::oom::Unused, u64)> + '_ {
        self.parser.unused_counts()
    }

    /// The next kill (or unused line); None at the end of the input. A read
    /// error ends the input like its end does.
    pub fn next_item(&mut self) -> Option<ReadItem> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.read_line() {
                Some(line) => self.physical(&line),
                None => self.finish(),
            }
        }
    }

    /// Reads one physical line (without its newline), cut at [`MAX_LINE`].
    fn read_line(&mut self) -> Option<String> {
        self.line.clear();
        let mut cut = false;
        let mut any = false;
        loop {
            let buffer = match self.input.fill_buf() {
                Ok(buffer) => buffer,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if buffer.is_empty() {
                break;
            }
            any = true;
            let newline = memchr::memchr(b'\n', buffer);
            let take = newline.unwrap_or(buffer.len());
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&buffer[..take.min(room)]);
            cut |= take > room;
            self.input.consume(newline.map_or(take, |at| at + 1));
            if newline.is_some() {
                break;
            }
        }
        if !any {
            return None;
        }
        self.stats.lines += 1;
        if cut {
            self.stats.cut_lines += 1;
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Some(String::from_utf8_lossy(&self.line).into_owned())
    }

    fn physical(&mut self, raw: &str) {
        let unpadded;
        let raw = if PADDING_RUN.find(raw.as_bytes()).is_some() {
            unpadded = collapse_padding(raw);
            unpadded.as_str()
        } else {
            raw
        };
        let parsed = parse_line(raw, self.year);
        let line_no = self.stats.lines;
        let source = json::provenance(raw);
        if source.kernel || source.echo {
            self.marks.push_back((line_no, source));
            while self
                .marks
                .front()
                .is_some_and(|(at, _)| at + 2 * JSON_WINDOW < line_no)
            {
                self.marks.pop_front();
            }
        }
        self.release_waiting(line_no, false);
        if USER_SPACE_KILLERS.is_match(raw) {
            self.stats.user_space_killer_lines += 1;
        }
        let from_kernel = parsed.from_kernel();
        let (prefixed, host, caller, json_source, stamp) = (
            parsed.prefixed,
            parsed.host.map(str::to_owned),
            parsed.caller.map(str::to_owned),
            parsed.json,
            parsed.stamp,
        );
        let message = parsed.message.into_owned();
        let classified = lines::classify(&message);
        // The rest of a wrapped line: no prefix of its own, nothing by
        // itself, and the line before is the better for it.
        if let Some(pending) = self.pending.as_mut()
            && !prefixed
            && classified.is_none()
            && let Some(joined) = join(&pending.message, raw.trim_start())
        {
            pending.message = joined;
            self.stats.joined_lines += 1;
            return;
        }
        if let Some(pending) = self.pending.take() {
            self.logical(pending);
        }
        let continues = may_continue(&message, classified.as_ref());
        let held = Held {
            json: json_source.map(|source| (source, line_no)),
            message,
            host,
            caller,
            from_kernel,
            stamp: Stamp {
                line: Some(line_no),
                ..stamp
            },
        };
        if continues {
            self.pending = Some(held);
        } else {
            self.logical(held);
        }
    }

    /// A whole line, in physical order: held while a JSON value before it
    /// waits for its record's source, then to the order stage.
    fn logical(&mut self, line: Held) {
        let undecided = line
            .json
            .is_some_and(|(source, _)| !source.kernel && !source.echo && relevant(&line.message));
        if undecided || !self.waiting.is_empty() {
            self.waiting.push_back(line);
            self.release_waiting(self.stats.lines, false);
        } else {
            self.ordered(line);
        }
    }

    /// Decides the JSON values held whose record's source is known (or
    /// whose window has passed, or all at the end), and passes the lines
    /// on in order.
    fn release_waiting(&mut self, now: u64, all: bool) {
        while let Some(front) = self.waiting.front() {
            if let Some((source, at)) = front.json {
                let near = |mark_at: u64| mark_at + JSON_WINDOW >= at && mark_at <= at + JSON_WINDOW;
                let echo = source.echo || self.marks.iter().any(|(m, p)| p.echo && near(*m));
                let kernel = source.kernel || self.marks.iter().any(|(m, p)| p.kernel && near(*m));
                let decided = echo || kernel || all || now > at + JSON_WINDOW;
                if !decided {
                    return;
                }
                let Some(mut line) = self.waiting.pop_front() else {
                    return;
                };
                // No mark, no kill: a document quoting a kill line is not one.
                line.from_kernel = kernel && !echo;
                line.json = None;
                self.ordered(line);
            } else {
                let Some(line) = self.waiting.pop_front() else {
                    return;
                };
                self.ordered(line);
            }
        }
    }

    /// A whole line, in physical order: to the parser, once the log's
    /// order is known.
    fn ordered(&mut self, line: Held) {
        match &mut self.order {
            Order::OldestFirst => self.feed(&line),
            Order::NewestFirst(held) => {
                if relevant(&line.message) {
                    held.push(line);
                }
                if held.len() >= MAX_REVERSED {
                    self.flush_reversed();
                }
            }
            Order::Sniffing(held) => {
                held.push(line);
                if held.len() >= SNIFF_LINES {
                    self.decide_order();
                }
            }
        }
    }

    /// Newest first when most consecutive stamps (of one host, of one
    /// kind) go down.
    fn decide_order(&mut self) {
        let Order::Sniffing(held) = std::mem::replace(&mut self.order, Order::OldestFirst) else {
            return;
        };
        let (mut up, mut down) = (0u32, 0u32);
        for pair in held.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.host != b.host {
                continue;
            }
            let order = match (
                a.stamp.wall,
                b.stamp.wall,
                a.stamp.monotonic_us,
                b.stamp.monotonic_us,
            ) {
                (Some(x), Some(y), _, _) => x.cmp(&y),
                (None, None, Some(x), Some(y)) => x.cmp(&y),
                _ => continue,
            };
            match order {
                std::cmp::Ordering::Less => up += 1,
                std::cmp::Ordering::Greater => down += 1,
                std::cmp::Ordering::Equal => {}
            }
        }
        if down >= 3 && down > 2 * up {
            self.stats.newest_first = true;
            self.order = Order::NewestFirst(held.into_iter().filter(|l| relevant(&l.message)).collect());
        } else {
            for line in &held {
                self.feed(line);
            }
        }
    }

    fn flush_reversed(&mut self) {
        if let Order::NewestFirst(held) = &mut self.order {
            let lines = std::mem::take(held);
            for line in lines.iter().rev() {
                self.feed(line);
            }
        }
    }

    fn feed(&mut self, line: &Held) {
        self.parser.push(&line.input());
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(report) = self.parser.next_report() {
            self.out.push_back(ReadItem::Report(Box::new(report)));
        }
        while let Some(unused) = self.parser.next_unused() {
            self.out.push_back(ReadItem::Unused(unused));
        }
    }

    fn finish(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.logical(pending);
        }
        self.release_waiting(self.stats.lines, true);
        if matches!(self.order, Order::Sniffing(_)) {
            self.decide_order();
        }
        self.flush_reversed();
        self.parser.finish();
        self.drain();
        self.done = true;
    }
}

/// Lines worth holding to reverse: those the parser can use.
fn relevant(message: &str) -> bool {
    lines::may_start_report(message) || lines::classify(message).is_some()
}
