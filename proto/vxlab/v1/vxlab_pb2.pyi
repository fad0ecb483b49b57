from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Host(_message.Message):
    __slots__ = ("name", "underlay_ip", "underlay_mtu", "alive", "lease_ttl", "registered_at", "agent_version", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_MTU_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    underlay_ip: str
    underlay_mtu: int
    alive: bool
    lease_ttl: int
    registered_at: str
    agent_version: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., underlay_ip: _Optional[str] = ..., underlay_mtu: _Optional[int] = ..., alive: _Optional[bool] = ..., lease_ttl: _Optional[int] = ..., registered_at: _Optional[str] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("name", "id", "subnet", "gateway", "vni", "mtu", "internal", "created", "driver", "labels", "host")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    subnet: str
    gateway: str
    vni: int
    mtu: int
    internal: bool
    created: str
    driver: str
    labels: _containers.ScalarMap[str, str]
    host: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., subnet: _Optional[str] = ..., gateway: _Optional[str] = ..., vni: _Optional[int] = ..., mtu: _Optional[int] = ..., internal: _Optional[bool] = ..., created: _Optional[str] = ..., driver: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., host: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "network", "host", "ip", "mac", "id", "created", "labels", "aliases", "ports", "runtime", "netns")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    network: str
    host: str
    ip: str
    mac: str
    id: str
    created: str
    labels: _containers.ScalarMap[str, str]
    aliases: _containers.RepeatedScalarFieldContainer[str]
    ports: _containers.RepeatedCompositeFieldContainer[PortMapping]
    runtime: str
    netns: str
    def __init__(self, name: _Optional[str] = ..., network: _Optional[str] = ..., host: _Optional[str] = ..., ip: _Optional[str] = ..., mac: _Optional[str] = ..., id: _Optional[str] = ..., created: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., aliases: _Optional[_Iterable[str]] = ..., ports: _Optional[_Iterable[_Union[PortMapping, _Mapping]]] = ..., runtime: _Optional[str] = ..., netns: _Optional[str] = ...) -> None: ...

class PortMapping(_message.Message):
    __slots__ = ("host_ip", "host_port", "container_port", "protocol")
    HOST_IP_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    host_ip: str
    host_port: int
    container_port: int
    protocol: str
    def __init__(self, host_ip: _Optional[str] = ..., host_port: _Optional[int] = ..., container_port: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "network", "vip", "replicas", "selector", "ports", "affinity", "id", "created")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VIP_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    network: str
    vip: str
    replicas: _containers.RepeatedScalarFieldContainer[str]
    selector: _containers.ScalarMap[str, str]
    ports: _containers.RepeatedScalarFieldContainer[str]
    affinity: str
    id: str
    created: str
    def __init__(self, name: _Optional[str] = ..., network: _Optional[str] = ..., vip: _Optional[str] = ..., replicas: _Optional[_Iterable[str]] = ..., selector: _Optional[_Mapping[str, str]] = ..., ports: _Optional[_Iterable[str]] = ..., affinity: _Optional[str] = ..., id: _Optional[str] = ..., created: _Optional[str] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ("container", "label", "cidr")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    container: str
    label: str
    cidr: str
    def __init__(self, container: _Optional[str] = ..., label: _Optional[str] = ..., cidr: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "network", "action", "source", "destination", "protocol", "ports", "priority", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    network: str
    action: str
    source: Selector
    destination: Selector
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    created: str
    def __init__(self, name: _Optional[str] = ..., network: _Optional[str] = ..., action: _Optional[str] = ..., source: _Optional[_Union[Selector, _Mapping]] = ..., destination: _Optional[_Union[Selector, _Mapping]] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., created: _Optional[str] = ...) -> None: ...

class FaultStatus(_message.Message):
    __slots__ = ("host", "state", "reason", "at")
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    host: str
    state: str
    reason: str
    at: str
    def __init__(self, host: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("id", "kind", "params", "targets", "duration", "expires_at", "created", "status")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    params: _containers.ScalarMap[str, str]
    targets: _containers.RepeatedScalarFieldContainer[str]
    duration: float
    expires_at: str
    created: str
    status: _containers.RepeatedCompositeFieldContainer[FaultStatus]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., targets: _Optional[_Iterable[str]] = ..., duration: _Optional[float] = ..., expires_at: _Optional[str] = ..., created: _Optional[str] = ..., status: _Optional[_Iterable[_Union[FaultStatus, _Mapping]]] = ...) -> None: ...

class RegisterHostRequest(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: Host
    def __init__(self, host: _Optional[_Union[Host, _Mapping]] = ...) -> None: ...

class RegisterHostResponse(_message.Message):
    __slots__ = ("host", "lease_id", "lease_ttl")
    HOST_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    host: Host
    lease_id: int
    lease_ttl: int
    def __init__(self, host: _Optional[_Union[Host, _Mapping]] = ..., lease_id: _Optional[int] = ..., lease_ttl: _Optional[int] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ("name", "lease_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    lease_id: int
    def __init__(self, name: _Optional[str] = ..., lease_id: _Optional[int] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ("lease_id", "ttl", "renewed")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    ttl: int
    renewed: bool
    def __init__(self, lease_id: _Optional[int] = ..., ttl: _Optional[int] = ..., renewed: _Optional[bool] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "revision")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    revision: int
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeregisterHostRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeregisterHostResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: Network
    def __init__(self, network: _Optional[_Union[Network, _Mapping]] = ...) -> None: ...

class GetNetworkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListNetworksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks", "revision")
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    revision: int
    def __init__(self, networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class UpdateNetworkRequest(_message.Message):
    __slots__ = ("network", "update_mask")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    network: Network
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, network: _Optional[_Union[Network, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteNetworkRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteNetworkResponse(_message.Message):
    __slots__ = ("deleted_endpoints",)
    DELETED_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    deleted_endpoints: int
    def __init__(self, deleted_endpoints: _Optional[int] = ...) -> None: ...

class CreateEndpointRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("network", "host", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    host: str
    name: str
    def __init__(self, network: _Optional[str] = ..., host: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "revision")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    revision: int
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class UpdateEndpointRequest(_message.Message):
    __slots__ = ("endpoint", "update_mask")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteEndpointRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreatePolicyRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: str
    def __init__(self, network: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "revision")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    revision: int
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateFaultRequest(_message.Message):
    __slots__ = ("fault",)
    FAULT_FIELD_NUMBER: _ClassVar[int]
    fault: Fault
    def __init__(self, fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class GetFaultRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListFaultsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFaultsResponse(_message.Message):
    __slots__ = ("faults", "revision")
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    revision: int
    def __init__(self, faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class DeleteFaultRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteFaultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportFaultStatusRequest(_message.Message):
    __slots__ = ("id", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: FaultStatus
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[FaultStatus, _Mapping]] = ...) -> None: ...

class ReportFaultStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start_revision",)
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    def __init__(self, start_revision: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("kind", "host", "network", "endpoint", "policy", "service", "fault")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[Change.Kind]
        DELETE: _ClassVar[Change.Kind]
    PUT: Change.Kind
    DELETE: Change.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    kind: Change.Kind
    host: Host
    network: Network
    endpoint: Endpoint
    policy: Policy
    service: Service
    fault: Fault
    def __init__(self, kind: _Optional[_Union[Change.Kind, str]] = ..., host: _Optional[_Union[Host, _Mapping]] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., service: _Optional[_Union[Service, _Mapping]] = ..., fault: _Optional[_Union[Fault, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("revision", "snapshot", "compacted", "hosts", "networks", "endpoints", "changes", "policies", "services", "faults")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    snapshot: bool
    compacted: bool
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    def __init__(self, revision: _Optional[int] = ..., snapshot: _Optional[bool] = ..., compacted: _Optional[bool] = ..., hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ...) -> None: ...

class CreateServiceRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: Service
    def __init__(self, service: _Optional[_Union[Service, _Mapping]] = ...) -> None: ...

class GetServiceRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ("network",)
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    network: str
    def __init__(self, network: _Optional[str] = ...) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services", "revision")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    revision: int
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class DeleteServiceRequest(_message.Message):
    __slots__ = ("network", "name")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    network: str
    name: str
    def __init__(self, network: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteServiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeSpec(_message.Message):
    __slots__ = ("container", "ip", "protocol", "port", "timeout")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    container: str
    ip: str
    protocol: str
    port: int
    timeout: float
    def __init__(self, container: _Optional[str] = ..., ip: _Optional[str] = ..., protocol: _Optional[str] = ..., port: _Optional[int] = ..., timeout: _Optional[float] = ...) -> None: ...

class ProbeBatch(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[ProbeSpec]
    def __init__(self, probes: _Optional[_Iterable[_Union[ProbeSpec, _Mapping]]] = ...) -> None: ...

class PingStream(_message.Message):
    __slots__ = ("container", "ip", "interval", "count", "timeout")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    container: str
    ip: str
    interval: float
    count: int
    timeout: float
    def __init__(self, container: _Optional[str] = ..., ip: _Optional[str] = ..., interval: _Optional[float] = ..., count: _Optional[int] = ..., timeout: _Optional[float] = ...) -> None: ...

class Capture(_message.Message):
    __slots__ = ("device", "filter", "count", "seconds")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    filter: _containers.RepeatedScalarFieldContainer[str]
    count: int
    seconds: float
    def __init__(self, device: _Optional[str] = ..., filter: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class KernelView(_message.Message):
    __slots__ = ("network", "containers")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    network: str
    containers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, network: _Optional[str] = ..., containers: _Optional[_Iterable[str]] = ...) -> None: ...

class Drift(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Exec(_message.Message):
    __slots__ = ("container", "argv")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    container: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, container: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ...) -> None: ...

class IperfServer(_message.Message):
    __slots__ = ("container", "port")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    container: str
    port: int
    def __init__(self, container: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class IperfClient(_message.Message):
    __slots__ = ("container", "ip", "port", "seconds", "interval")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    container: str
    ip: str
    port: int
    seconds: float
    interval: float
    def __init__(self, container: _Optional[str] = ..., ip: _Optional[str] = ..., port: _Optional[int] = ..., seconds: _Optional[float] = ..., interval: _Optional[float] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class OpRequest(_message.Message):
    __slots__ = ("id", "host", "timeout", "probe", "ping", "capture", "kernel_view", "drift", "exec", "iperf_server", "iperf_client", "cancel")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VIEW_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    IPERF_SERVER_FIELD_NUMBER: _ClassVar[int]
    IPERF_CLIENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    timeout: float
    probe: ProbeBatch
    ping: PingStream
    capture: Capture
    kernel_view: KernelView
    drift: Drift
    exec: Exec
    iperf_server: IperfServer
    iperf_client: IperfClient
    cancel: Cancel
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., timeout: _Optional[float] = ..., probe: _Optional[_Union[ProbeBatch, _Mapping]] = ..., ping: _Optional[_Union[PingStream, _Mapping]] = ..., capture: _Optional[_Union[Capture, _Mapping]] = ..., kernel_view: _Optional[_Union[KernelView, _Mapping]] = ..., drift: _Optional[_Union[Drift, _Mapping]] = ..., exec: _Optional[_Union[Exec, _Mapping]] = ..., iperf_server: _Optional[_Union[IperfServer, _Mapping]] = ..., iperf_client: _Optional[_Union[IperfClient, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("index", "reached", "rtt_ms", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REACHED_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    reached: bool
    rtt_ms: float
    error: str
    def __init__(self, index: _Optional[int] = ..., reached: _Optional[bool] = ..., rtt_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class ProbeResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ProbeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ProbeResult, _Mapping]]] = ...) -> None: ...

class PingSample(_message.Message):
    __slots__ = ("seq", "sent", "rtt_ms", "lost")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    seq: int
    sent: float
    rtt_ms: float
    lost: bool
    def __init__(self, seq: _Optional[int] = ..., sent: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., lost: _Optional[bool] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class Line(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class KernelLink(_message.Message):
    __slots__ = ("name", "kind", "alias", "mac", "mtu", "up", "master", "vni", "local", "port", "learning", "proxy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LEARNING_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    alias: str
    mac: str
    mtu: int
    up: bool
    master: str
    vni: int
    local: str
    port: int
    learning: bool
    proxy: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., alias: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., up: _Optional[bool] = ..., master: _Optional[str] = ..., vni: _Optional[int] = ..., local: _Optional[str] = ..., port: _Optional[int] = ..., learning: _Optional[bool] = ..., proxy: _Optional[bool] = ...) -> None: ...

class KernelAddr(_message.Message):
    __slots__ = ("dev", "cidr")
    DEV_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    dev: str
    cidr: str
    def __init__(self, dev: _Optional[str] = ..., cidr: _Optional[str] = ...) -> None: ...

class KernelRoute(_message.Message):
    __slots__ = ("dst", "gateway", "dev")
    DST_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DEV_FIELD_NUMBER: _ClassVar[int]
    dst: str
    gateway: str
    dev: str
    def __init__(self, dst: _Optional[str] = ..., gateway: _Optional[str] = ..., dev: _Optional[str] = ...) -> None: ...

class KernelFdb(_message.Message):
    __slots__ = ("dev", "mac", "dst")
    DEV_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    dev: str
    mac: str
    dst: str
    def __init__(self, dev: _Optional[str] = ..., mac: _Optional[str] = ..., dst: _Optional[str] = ...) -> None: ...

class KernelNeigh(_message.Message):
    __slots__ = ("dev", "ip", "mac")
    DEV_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    dev: str
    ip: str
    mac: str
    def __init__(self, dev: _Optional[str] = ..., ip: _Optional[str] = ..., mac: _Optional[str] = ...) -> None: ...

class KernelNamespace(_message.Message):
    __slots__ = ("name", "marker", "links", "addrs", "routes", "fdb", "neigh")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    FDB_FIELD_NUMBER: _ClassVar[int]
    NEIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    marker: str
    links: _containers.RepeatedCompositeFieldContainer[KernelLink]
    addrs: _containers.RepeatedCompositeFieldContainer[KernelAddr]
    routes: _containers.RepeatedCompositeFieldContainer[KernelRoute]
    fdb: _containers.RepeatedCompositeFieldContainer[KernelFdb]
    neigh: _containers.RepeatedCompositeFieldContainer[KernelNeigh]
    def __init__(self, name: _Optional[str] = ..., marker: _Optional[str] = ..., links: _Optional[_Iterable[_Union[KernelLink, _Mapping]]] = ..., addrs: _Optional[_Iterable[_Union[KernelAddr, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[KernelRoute, _Mapping]]] = ..., fdb: _Optional[_Iterable[_Union[KernelFdb, _Mapping]]] = ..., neigh: _Optional[_Iterable[_Union[KernelNeigh, _Mapping]]] = ...) -> None: ...

class KernelState(_message.Message):
    __slots__ = ("namespaces", "underlay_ip", "underlay_dev", "underlay_mtu")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_DEV_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_MTU_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[KernelNamespace]
    underlay_ip: str
    underlay_dev: str
    underlay_mtu: int
    def __init__(self, namespaces: _Optional[_Iterable[_Union[KernelNamespace, _Mapping]]] = ..., underlay_ip: _Optional[str] = ..., underlay_dev: _Optional[str] = ..., underlay_mtu: _Optional[int] = ...) -> None: ...

class DriftEntry(_message.Message):
    __slots__ = ("namespace", "state", "kind", "target", "reason")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    state: str
    kind: str
    target: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., state: _Optional[str] = ..., kind: _Optional[str] = ..., target: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("entries", "revision", "applied_revision")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DriftEntry]
    revision: int
    applied_revision: int
    def __init__(self, entries: _Optional[_Iterable[_Union[DriftEntry, _Mapping]]] = ..., revision: _Optional[int] = ..., applied_revision: _Optional[int] = ...) -> None: ...

class ExecResult(_message.Message):
    __slots__ = ("exit_code", "stdout", "stderr", "truncated")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    def __init__(self, exit_code: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., truncated: _Optional[bool] = ...) -> None: ...

class IperfReport(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("held", "dropped")
    HELD_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    held: int
    dropped: int
    def __init__(self, held: _Optional[int] = ..., dropped: _Optional[int] = ...) -> None: ...

class OpEvent(_message.Message):
    __slots__ = ("id", "ready", "probes", "sample", "line", "kernel", "drift", "exec", "iperf", "done", "resumed")
    ID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    IPERF_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    id: str
    ready: Ready
    probes: ProbeResults
    sample: PingSample
    line: Line
    kernel: KernelState
    drift: DriftReport
    exec: ExecResult
    iperf: IperfReport
    done: Done
    resumed: Resumed
    def __init__(self, id: _Optional[str] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., probes: _Optional[_Union[ProbeResults, _Mapping]] = ..., sample: _Optional[_Union[PingSample, _Mapping]] = ..., line: _Optional[_Union[Line, _Mapping]] = ..., kernel: _Optional[_Union[KernelState, _Mapping]] = ..., drift: _Optional[_Union[DriftReport, _Mapping]] = ..., exec: _Optional[_Union[ExecResult, _Mapping]] = ..., iperf: _Optional[_Union[IperfReport, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("host", "agent_version", "resume")
    HOST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    host: str
    agent_version: str
    resume: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host: _Optional[str] = ..., agent_version: _Optional[str] = ..., resume: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "event")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    event: OpEvent
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., event: _Optional[_Union[OpEvent, _Mapping]] = ...) -> None: ...
