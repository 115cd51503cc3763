//! What Kubernetes shows for a killed container, next to what happened:
//! the runtime's report (`runtime_status`, which the kubelet turns into
//! the pod's status) compared with the kill. Known ways they part:
//! kubernetes#53669 (a kill for want of memory above the container's own
//! limit shows as `Error`, exit 137), kubernetes#78973 (a child killed in a
//! live container shows nothing), kubernetes#140718 (a later exit shows as
//! `OOMKilled` after an earlier child kill). Pure.

use oomlens_proto::v1::{ContainerState, OomEvent, Scope, StatusMatch};

/// The comparison, and its words when they part.
pub fn compare(event: &OomEvent) -> (StatusMatch, Option<String>) {
    let Some(status) = event.runtime_status.as_ref() else {
        return (StatusMatch::Unspecified, None);
    };
    let state = ContainerState::try_from(status.state).unwrap_or(ContainerState::Unspecified);
    let reason = status.reason.as_deref().filter(|r| !r.is_empty());
    let exit = status.exit_code;
    let container = event
        .container
        .as_ref()
        .and_then(|c| c.name.clone())
        .map_or_else(|| "the container".to_owned(), |n| format!("container {n}"));
    let victim = event.victim.as_ref();
    let process = match (victim.and_then(|v| v.comm.as_deref()), victim.and_then(|v| v.pid)) {
        (Some(comm), Some(pid)) => format!("{comm} (pid {pid})"),
        (Some(comm), None) => comm.to_owned(),
        _ => "a process".to_owned(),
    };
    let oomkilled = reason == Some("OOMKilled");
    let child_killed =
        event.silent == Some(true) || (event.silent.is_none() && state == ContainerState::Running);
    if child_killed {
        return match state {
            ContainerState::Exited if oomkilled && exit != Some(137) => (
                StatusMatch::OomkilledNotAKill,
                Some(format!(
                    "Kubernetes shows OOMKilled (exit {}) for {container}'s later exit, which was not a kill: \
                     only {process} was killed inside it, and the runtime reports OOMKilled once any of its \
                     processes was",
                    exit.map_or_else(|| "?".to_owned(), |c| c.to_string())
                )),
            ),
            ContainerState::Running | ContainerState::Exited => (
                StatusMatch::KillNotShown,
                Some(format!(
                    "Kubernetes shows nothing of this kill: {process} was killed inside {container}, which \
                     kept running (no restart, no OOMKilled)"
                )),
            ),
            _ => (StatusMatch::Unspecified, None),
        };
    }
    if state != ContainerState::Exited {
        return (StatusMatch::Unspecified, None);
    }
    if oomkilled {
        return (StatusMatch::Consistent, None);
    }
    let why = match Scope::try_from(event.scope).unwrap_or(Scope::Unspecified) {
        Scope::NodeOom => "the whole node ran out of memory",
        Scope::NodeAllocatable => "the node's pods together reached their allocatable memory",
        Scope::PodLimit => "the pod's memory limit was reached, not the container's own",
        Scope::Cpuset | Scope::Mempolicy => "the memory nodes it may use ran out",
        _ => "it ran out of memory at its limit",
    };
    (
        StatusMatch::ErrorNotOomkilled,
        Some(format!(
            "Kubernetes shows {} (exit {}) for {container}; the kernel killed it because {why}",
            reason.unwrap_or("Error"),
            exit.map_or_else(|| "?".to_owned(), |c| c.to_string())
        )),
    )
}

#[cfg(test)]
mod tests {
    use oomlens_proto::v1::{Container, RuntimeStatus, Victim};

    use super::*;

    fn kill(
        scope: Scope,
        silent: Option<bool>,
        state: ContainerState,
        reason: Option<&str>,
        exit: Option<i32>,
    ) -> OomEvent {
        OomEvent {
            scope: scope as i32,
            silent,
            victim: Some(Victim {
                pid: Some(4242),
                comm: Some("java".to_owned()),
                ..Victim::default()
            }),
            container: Some(Container {
                name: Some("api".to_owned()),
                ..Container::default()
            }),
            runtime_status: Some(RuntimeStatus {
                state: state as i32,
                reason: reason.map(str::to_owned),
                exit_code: exit,
                ..RuntimeStatus::default()
            }),
            ..OomEvent::default()
        }
    }

    #[test]
    fn a_container_killed_at_its_limit_and_shown_oomkilled_is_consistent() {
        let event = kill(
            Scope::ContainerLimit,
            Some(false),
            ContainerState::Exited,
            Some("OOMKilled"),
            Some(137),
        );
        assert_eq!(compare(&event), (StatusMatch::Consistent, None));
    }

    #[test]
    fn a_node_or_pod_kill_shown_as_error_is_flagged() {
        let event = kill(
            Scope::NodeOom,
            Some(false),
            ContainerState::Exited,
            Some("Error"),
            Some(137),
        );
        let (m, text) = compare(&event);
        assert_eq!(m, StatusMatch::ErrorNotOomkilled);
        assert_eq!(
            text.unwrap(),
            "Kubernetes shows Error (exit 137) for container api; the kernel killed it because the whole node ran out of memory"
        );
        let pod = kill(
            Scope::PodLimit,
            Some(false),
            ContainerState::Exited,
            None,
            Some(137),
        );
        let (m, text) = compare(&pod);
        assert_eq!(m, StatusMatch::ErrorNotOomkilled);
        assert!(text.unwrap().contains("shows Error (exit 137)"));
    }

    #[test]
    fn a_child_killed_in_a_live_container_is_not_shown() {
        let event = kill(
            Scope::ContainerLimit,
            Some(true),
            ContainerState::Running,
            None,
            None,
        );
        let (m, text) = compare(&event);
        assert_eq!(m, StatusMatch::KillNotShown);
        assert_eq!(
            text.unwrap(),
            "Kubernetes shows nothing of this kill: java (pid 4242) was killed inside container api, which kept running (no restart, no OOMKilled)"
        );
    }

    #[test]
    fn a_later_graceful_exit_shown_as_oomkilled_is_flagged() {
        let event = kill(
            Scope::ContainerLimit,
            Some(true),
            ContainerState::Exited,
            Some("OOMKilled"),
            Some(0),
        );
        let (m, text) = compare(&event);
        assert_eq!(m, StatusMatch::OomkilledNotAKill);
        assert!(
            text.unwrap()
                .starts_with("Kubernetes shows OOMKilled (exit 0) for container api's later exit")
        );
    }

    #[test]
    fn no_report_no_judgement() {
        let mut event = kill(
            Scope::ContainerLimit,
            Some(false),
            ContainerState::Exited,
            Some("OOMKilled"),
            Some(137),
        );
        event.runtime_status = None;
        assert_eq!(compare(&event), (StatusMatch::Unspecified, None));
        let gone = kill(
            Scope::ContainerLimit,
            Some(false),
            ContainerState::Gone,
            None,
            None,
        );
        assert_eq!(compare(&gone), (StatusMatch::Unspecified, None));
    }
}
