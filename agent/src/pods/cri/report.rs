//! What the runtime reports for a container after a kill: the state, exit
//! code and reason the kubelet turns into the pod's status, and the
//! restart count it shows.

use oomlens_proto::v1 as pb;

use super::{CriClient, CriError, runtime};

/// A runtime's exited container, in the contract's terms.
fn state(state: i32) -> pb::ContainerState {
    match runtime::ContainerState::try_from(state) {
        Ok(runtime::ContainerState::ContainerCreated) => pb::ContainerState::Created,
        Ok(runtime::ContainerState::ContainerRunning) => pb::ContainerState::Running,
        Ok(runtime::ContainerState::ContainerExited) => pb::ContainerState::Exited,
        _ => pb::ContainerState::Unspecified,
    }
}

impl CriClient {
    /// The runtime's report on container `id` now. A container the runtime
    /// no longer knows is `Gone` (settled).
    pub async fn report(&mut self, id: &str) -> Result<pb::RuntimeStatus, CriError> {
        let observed = Some(oomlens_proto::time::timestamp_from_unix_ms(
            oomlens_proto::time::now_unix_ms(),
        ));
        let reply = self
            .client
            .container_status(runtime::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await;
        let status = match reply {
            Ok(reply) => reply.into_inner().status.unwrap_or_default(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Ok(pb::RuntimeStatus {
                    observed,
                    state: pb::ContainerState::Gone as i32,
                    settled: true,
                    ..pb::RuntimeStatus::default()
                });
            }
            Err(status) => return Err(self.call_error("ContainerStatus", status)),
        };
        let state = state(status.state);
        let exited = state == pb::ContainerState::Exited;
        let name = status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let attempt = status.metadata.as_ref().map(|m| m.attempt);
        let pod_uid = status.labels.get("io.kubernetes.pod.uid").cloned();
        // The kubelet's restart count: the newest attempt of this container
        // name in the pod (a restart is a new container). Listed once the
        // state has settled, not on every poll.
        let newest = match pod_uid {
            Some(uid) if exited && !name.is_empty() => self
                .list()
                .await
                .ok()
                .into_iter()
                .flatten()
                .filter(|c| c.pod_uid == uid && c.name == name)
                .filter_map(|c| c.restart_count)
                .max(),
            _ => None,
        };
        Ok(pb::RuntimeStatus {
            observed,
            state: state as i32,
            exit_code: exited.then_some(status.exit_code),
            reason: Some(status.reason).filter(|r| exited && !r.is_empty()),
            restart_count: newest.max(attempt),
            settled: exited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_states_map_to_the_contract() {
        assert_eq!(
            state(runtime::ContainerState::ContainerExited as i32),
            pb::ContainerState::Exited
        );
        assert_eq!(
            state(runtime::ContainerState::ContainerRunning as i32),
            pb::ContainerState::Running
        );
        assert_eq!(
            state(runtime::ContainerState::ContainerCreated as i32),
            pb::ContainerState::Created
        );
        assert_eq!(state(99), pb::ContainerState::Unspecified);
    }
}
