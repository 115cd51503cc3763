//! The web pages in a real browser: headless Chromium (Debian's
//! `chromium` and `chromium-driver`, which `.ci/run` installs) driven over
//! WebDriver, against the real collector binary fed by the real agent with
//! real kernel OOM kills. The kill list loads; a new kill appears in it
//! live, without a reload; the kill page draws the memory chart with a
//! point per sample; filters change the URL and the rows; a phone-width
//! window does not scroll sideways; dark mode. Screenshots are saved under
//! `target/web-screenshots/`.
//!
//! Needs root and the cgroup v1 memory controller (real kills) and the
//! browser; without them it skips with the reason printed, unless
//! `OOMLENS_REQUIRE_BROWSER=1` (CI) makes a missing browser a failure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use oomlens_tests::agent::{start_shipping_with, stop};
use oomlens_tests::browser::{self, Browser};
use oomlens_tests::collector::CollectorProcess;
use oomlens_tests::{ScratchTree, pod_and_container_ids, require_real_kernel, spawn_memhog, unique};

const MEMHOG: &str = env!("CARGO_BIN_EXE_oomlens-memhog");

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-screenshots")
}

/// A kubepods-shaped container cgroup climbing slowly into a 32 MiB
/// limit, so the agent's sampler records the climb; its kernel path.
fn sampled_kill(tree: &ScratchTree) -> String {
    let (uid, id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{id}");
    let dir = tree.create(&container);
    tree.limit(&container, 32 << 20);
    // The sampler finds the new cgroup, then the hog climbs for a second.
    std::thread::sleep(Duration::from_millis(600));
    let mut hog = spawn_memhog(MEMHOG, &dir, 24.0, 200, 5.0);
    let _ = hog.wait();
    tree.kernel_path(&container)
}

/// The stored event of the kill at `memcg`, through the HTTP API.
async fn stored(http: &str, memcg: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = oomlens_tests::http::get(http, "/api/v1/events?limit=1000", &[])
            .await
            .json();
        if let Some(event) = page["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["oom_memcg"] == memcg))
        {
            return event.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{memcg} not stored in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Picks `scope` in the list's filter form and submits it, as a user
/// would; waits for the URL to say so and for `rows_then` to hold.
async fn choose_scope(browser: &Browser, scope: &str, rows_then: &str) {
    browser
        .eval(&format!(
            "document.getElementById('f-scope').value = '{scope}'; document.querySelector('form.filters').submit(); return true;"
        ))
        .await;
    browser
        .wait_for(
            &format!("the {scope} filter applied"),
            Duration::from_secs(10),
            &format!("return location.search.includes('scope={scope}') && {rows_then};"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_in_a_real_browser_on_real_kills() {
    require_real_kernel!();
    if let Err(reason) = browser::available() {
        assert!(
            std::env::var_os("OOMLENS_REQUIRE_BROWSER").is_none(),
            "OOMLENS_REQUIRE_BROWSER is set but {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(&dir.path().join("events.db").display().to_string(), dir.path());
    let http = collector.http_address();
    let mut agent = start_shipping_with(&collector.endpoint(), &dir.path().join("agent"), &[]);
    let tree = ScratchTree::new(&unique("oomlens-web"));
    let tree_for_kill = &tree;
    let first = tokio::task::block_in_place(|| sampled_kill(tree_for_kill));
    let first_event = stored(&http, &first).await;
    let first_id = first_event["id"].as_str().unwrap().to_owned();

    let browser = Browser::start(1280, 800).await;
    browser.goto(&format!("http://{http}/")).await;
    browser
        .wait_for(
            "the first kill listed",
            Duration::from_secs(10),
            &format!("return document.getElementById('kill-{first_id}') !== null;"),
        )
        .await;
    browser
        .wait_for(
            "the stream open",
            Duration::from_secs(10),
            "return document.getElementById('live').textContent.startsWith('live');",
        )
        .await;
    let rows_before = browser
        .eval("return document.querySelectorAll('#kills tr').length;")
        .await;

    // A kill while the page is open appears without a reload.
    let second = tokio::task::block_in_place(|| sampled_kill(tree_for_kill));
    let second_event = stored(&http, &second).await;
    let second_id = second_event["id"].as_str().unwrap().to_owned();
    browser
        .wait_for(
            "the new kill shown live",
            Duration::from_secs(20),
            &format!(
                "const row = document.getElementById('kill-{second_id}'); \
                 return row !== null && row.classList.contains('new') && row === document.querySelector('#kills tr');"
            ),
        )
        .await;
    let rows_after = browser
        .eval("return document.querySelectorAll('#kills tr').length;")
        .await;
    assert_eq!(rows_after.as_u64().unwrap(), rows_before.as_u64().unwrap() + 1);
    browser.screenshot(&screenshots().join("kills-1280.png")).await;

    // The kill page draws the memory chart, a point per stored sample and
    // the kernel's own at the kill.
    let samples = second_event["history"]["samples"].as_array().map_or(0, Vec::len);
    assert!(samples >= 5, "the sampler recorded the climb: {samples} samples");
    browser.goto(&format!("http://{http}/kills/{second_id}")).await;
    let points = browser
        .eval("return document.querySelector('svg.chart polyline.ws').getAttribute('points').trim().split(' ').length;")
        .await;
    assert_eq!(points.as_u64().unwrap(), samples as u64 + 1);
    let yaml = browser
        .eval("const y = document.querySelector('pre.yaml'); return y ? y.textContent : '';")
        .await;
    if second_event["analysis"]["recommended_limit_bytes"].is_u64() {
        assert!(yaml.as_str().unwrap().contains("memory: "), "{yaml}");
    }
    browser.screenshot(&screenshots().join("kill-1280.png")).await;
    let layers = browser
        .eval("const c = document.querySelector('svg.layers'); if (!c) return 0; c.scrollIntoView(); return c.querySelectorAll('polygon').length;")
        .await;
    assert_eq!(
        layers.as_u64(),
        Some(4),
        "the layers chart: anon, kernel, shmem, page cache"
    );
    browser
        .screenshot(&screenshots().join("kill-layers-1280.png"))
        .await;

    // Filters: the form changes the URL and the rows.
    browser.goto(&format!("http://{http}/")).await;
    choose_scope(
        &browser,
        "node_oom",
        "document.querySelectorAll('#kills tr').length === 0",
    )
    .await;
    choose_scope(
        &browser,
        "container_limit",
        &format!(
            "document.getElementById('kill-{first_id}') !== null && document.getElementById('kill-{second_id}') !== null"
        ),
    )
    .await;
    assert!(browser.url().await.contains("scope=container_limit"));
    browser.close().await;

    // A phone: nothing scrolls sideways but the table's own box.
    let phone = Browser::start(390, 844).await;
    for (path, shot) in [
        ("/".to_owned(), "kills-390.png"),
        (format!("/kills/{second_id}"), "kill-390.png"),
    ] {
        phone.goto(&format!("http://{http}{path}")).await;
        let fits = phone
            .eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
            .await;
        assert_eq!(fits, serde_json::Value::Bool(true), "{path} fits a phone's width");
        phone.screenshot(&screenshots().join(shot)).await;
    }
    phone.close().await;

    // Dark mode follows the system.
    let dark = Browser::start(1280, 800).await;
    dark.dark_mode().await;
    dark.goto(&format!("http://{http}/kills/{second_id}")).await;
    let background = dark
        .eval("return getComputedStyle(document.body).backgroundColor;")
        .await;
    assert_eq!(background, "rgb(21, 23, 27)");
    dark.screenshot(&screenshots().join("kill-dark-1280.png")).await;
    dark.close().await;
    stop(&mut agent);
}
