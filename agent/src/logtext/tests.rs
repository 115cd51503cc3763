//! Saved-log lines of every shape, split into their parts.

use super::*;

const KILL: &str = "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB";

#[test]
fn every_shape_yields_the_message() {
    let shapes = [
        format!("3,447,10837389275,-;{KILL}"),
        format!("[10837.389275] {KILL}"),
        format!("<3>[10837.389275] {KILL}"),
        format!("[Mon Jun 25 10:05:31 2024] {KILL}"),
        format!("[Di Jun 25 10:05:31 2024] {KILL}"),
        format!("kern  :err   : [10837.389275] {KILL}"),
        format!("kern  :err   : {KILL}"),
        format!("Jun 25 10:05:31 node-a kernel: {KILL}"),
        format!("Jun 25 10:05:31 kernel: {KILL}"),
        format!("Jun 25 10:05:31 node-a kernel: [10837.389275] {KILL}"),
        format!("2024-06-25T10:05:31.389275+0000 node-a kernel: {KILL}"),
        format!("2024-06-25T10:05:31.389275+00:00 node-a kernel: {KILL}"),
        format!("> [10837.389275] {KILL}"),
        format!(">> > Jun 25 10:05:31 node-a kernel: {KILL}"),
        format!("    [10837.389275] {KILL}"),
        format!("[10837.389275][ T2061] {KILL}"),
        KILL.to_owned(),
    ];
    for shape in &shapes {
        let line = parse_line(shape, 2024);
        assert_eq!(line.message, KILL, "{shape}");
        assert!(line.from_kernel(), "{shape}");
    }
}

#[test]
fn stamps_hosts_and_programs() {
    let raw = parse_line("3,447,10837389275,-,caller=T2061;x", 2024);
    assert_eq!(
        (raw.stamp.seq, raw.stamp.monotonic_us, raw.stamp.level, raw.caller),
        (Some(447), Some(10_837_389_275), Some(3), Some("T2061"))
    );
    let dmesg = parse_line("<4>[   12.5] x", 2024);
    assert_eq!(
        (dmesg.stamp.monotonic_us, dmesg.stamp.level, dmesg.facility),
        (Some(12_500_000), Some(4), Some(0))
    );
    let t = parse_line("[Mon Jun 25 10:05:31 2024] x", 1999);
    assert_eq!(t.stamp.wall, Some((1_719_309_931, 0)));
    let fr = parse_line("[mar. juin 25 10:05:31 2024] x", 1999);
    assert_eq!(fr.stamp.wall, Some((1_719_309_931, 0)));
    let ru = parse_line("[Вт июн 25 10:05:31 2024] x", 1999);
    assert_eq!(ru.stamp.wall, Some((1_719_309_931, 0)));
    let absurd_year = parse_line("[Thu Dec  7 00:05:14 20555555555555517] x", 1999);
    assert_eq!(absurd_year.stamp.wall, None);
    let unknown_month = parse_line("[Xx Qqq 25 10:05:31 2024] x", 1999);
    assert_eq!(
        (unknown_month.stamp.wall, unknown_month.message.as_ref()),
        (None, "[Xx Qqq 25 10:05:31 2024] x")
    );
    let syslog = parse_line("Jun 25 10:05:31.250 node-a kernel: x", 2024);
    assert_eq!(
        (syslog.host, syslog.program, syslog.stamp.wall),
        (Some("node-a"), Some("kernel"), Some((1_719_309_931, 250_000_000)))
    );
    let iso = parse_line("2024-06-25T12:05:31+0200 node-a kernel: x", 2024);
    assert_eq!(iso.stamp.wall, Some((1_719_309_931, 0)));
}

#[test]
fn other_programs_and_facilities_are_not_the_kernel() {
    let npd_text = format!("Jun 25 10:05:31 node-a node-problem-detector[812]: {KILL}");
    let npd = parse_line(&npd_text, 2024);
    assert_eq!(npd.program, Some("node-problem-detector"));
    assert!(!npd.from_kernel());
    let user_text = format!("11,9,5,-;{KILL}");
    let user = parse_line(&user_text, 2024);
    assert!(!user.from_kernel());
    let daemon_text = format!("daemon:err   : {KILL}");
    let daemon = parse_line(&daemon_text, 2024);
    assert!(!daemon.from_kernel());
    let forged_text = format!("<11>[1.0] {KILL}");
    let forged = parse_line(&forged_text, 2024);
    assert!(!forged.from_kernel());
}

#[test]
fn task_table_rows_keep_their_brackets() {
    let row = parse_line("[10837.389235] [   2061]     0  2061     8869 tail", 2024);
    assert_eq!(row.message, "[   2061]     0  2061     8869 tail");
    let header = parse_line(
        "[Thu Dec  7 00:05:15 2017] [ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
        2024,
    );
    assert_eq!(
        header.message,
        "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
    );
}
