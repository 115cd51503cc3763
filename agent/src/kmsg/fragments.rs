//! Lines the kernel logged in pieces. Kernels before 4.9 (RHEL 7's 3.10
//! among them) store a line printed with `KERN_CONT` as several records
//! when another CPU's printk comes between: the first flagged `c`, the rest
//! `+`. 3.10 prints `Task in /A killed` and ` as a result of limit of /B`
//! this way. Joined back, the parser sees the line the kernel meant. Pure.

use super::record::Record;

/// Joins `c` and `+` records into whole lines.
#[derive(Debug, Default)]
pub struct LineJoiner {
    open: Option<Record>,
}

impl LineJoiner {
    /// Takes one record; returns the whole lines it completes, in order
    /// (none while a line is still coming, at most two). Another CPU's
    /// records pass while a line is open: they are why it was cut.
    pub fn push(&mut self, record: Record) -> Vec<Record> {
        match record.flag {
            'c' => self.open.replace(record).into_iter().collect(),
            '+' => match self.open.take() {
                Some(mut open) => {
                    open.message.push_str(&record.message);
                    vec![open]
                }
                None => vec![record],
            },
            _ => vec![record],
        }
    }

    /// The line still open (nothing more came for a while, or the end).
    pub fn flush(&mut self) -> Option<Record> {
        self.open.take()
    }

    /// The first record of the line still open: a resume cursor stays
    /// before it.
    pub fn open_seq(&self) -> Option<u64> {
        self.open.as_ref().map(|r| r.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, flag: char, message: &str) -> Record {
        Record {
            facility: 0,
            level: 6,
            seq,
            timestamp_us: seq,
            flag,
            caller: None,
            message: message.to_owned(),
            fields: Vec::new(),
        }
    }

    #[test]
    fn pieces_become_the_line_the_kernel_meant() {
        let mut joiner = LineJoiner::default();
        assert!(
            joiner
                .push(record(1, 'c', "Task in /kubepods/pod1/abc killed"))
                .is_empty()
        );
        assert_eq!(joiner.open_seq(), Some(1));
        // Another CPU's line came between the pieces.
        let other = joiner.push(record(2, '-', "e1000: eth0 NIC Link is Up"));
        assert_eq!(other.len(), 1);
        let lines = joiner.push(record(3, '+', " as a result of limit of /kubepods/pod1"));
        assert_eq!(
            lines.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
            ["Task in /kubepods/pod1/abc killed as a result of limit of /kubepods/pod1"]
        );
        assert_eq!(lines[0].seq, 1);
        assert_eq!(joiner.open_seq(), None);
        // A continuation with nothing open stands alone.
        assert_eq!(joiner.push(record(4, '+', "x")).len(), 1);
        assert!(joiner.push(record(5, 'c', "a")).is_empty());
        assert_eq!(joiner.flush().map(|r| r.message), Some("a".to_owned()));
    }
}
