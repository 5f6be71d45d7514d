"""Subscriptions whose QoS follows the publishers of their topic, as ros-perception/image_pipeline's
nodes subscribe (getTopicQosProfile in image_proc/utils.hpp: the publisher's reliability, sensor-data
history), and re-evaluated while the node runs.

Why: a camera driver that publishes reliably (REP 2003 suggests the system default QoS for drivers)
loses large images to a best-effort reader when DDS drops fragments, while a reliable reader gets
them all. A reliable reader, in turn, does not match a best-effort publisher at all.

    subscription = AdaptiveSubscription(node, Image, 'image', callback)
    subscription.topic_name, subscription.qos, subscription.overridden; subscription.destroy()
    newest, infos = subscription.take()  # drain the reader: the newest message, the info of all taken

Rule (subscription_qos): every publisher reliable -> reliable, keep last RELIABLE_DEPTH; any
best-effort publisher -> best effort, keep last 5 (sensor data); no publisher yet -> sensor-data QoS.
A timer polls the graph every poll_s seconds (rclpy has no graph callbacks) and recreates the
subscription when the rule's answer changes; when the publishers go away the QoS stays as it was.
rclpy's QoSReliabilityPolicy.BEST_AVAILABLE (Jazzy) applies a similar rule once, at creation only.

User overrides: qos_overrides.<topic>.subscription.{history,depth,reliability} (rclpy
QoSOverridingOptions.with_default_policies, read-only parameters) given at start-up fix the QoS: the
subscription is created once with them and never adapts. Without overrides those parameters are not
declared: rclpy declares them once per topic with the QoS of the first creation, and they would then
show, and impose on every later subscription, a QoS that no longer holds.
"""
import copy
import threading

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.serialization import deserialize_message

POLL_S = 1.0
# Reliable readers keep the depth of rclpy's default profile (qos_profile_default, keep last 10): a
# burst the publisher's history holds is not overwritten in the reader's before the executor takes it.
RELIABLE_DEPTH = 10
RELIABLE = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=RELIABLE_DEPTH,
                      reliability=QoSReliabilityPolicy.RELIABLE)
OVERRIDABLE = QoSOverridingOptions.with_default_policies().policy_kinds  # history, depth, reliability


def subscription_qos(publishers) -> QoSProfile | None:
    """The QoS a subscription takes for these publishers (rclpy TopicEndpointInfo, or anything with
    .qos_profile.reliability): RELIABLE when all are reliable, sensor data when any is best effort,
    None when there is no publisher (nothing to follow)."""
    if not publishers:
        return None
    if all(p.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE for p in publishers):
        return RELIABLE
    return qos_profile_sensor_data


def describe(qos: QoSProfile) -> str:
    """e.g. 'reliable, keep last 10'."""
    if qos.history == QoSHistoryPolicy.KEEP_ALL:
        return f'{qos.reliability.name.lower()}, keep all'
    return f'{qos.reliability.name.lower()}, keep last {qos.depth}'


def _check_overrides(qos: QoSProfile) -> SetParametersResult:
    """QoSOverridingOptions callback: a depth that stores nothing is refused (rcl fails obscurely on it)."""
    if qos.history != QoSHistoryPolicy.KEEP_ALL and qos.depth < 1:
        return SetParametersResult(successful=False, reason=f'depth must be an integer >= 1, got {qos.depth}')
    return SetParametersResult(successful=True)


def user_overrides(node, topic_name: str) -> dict:
    """{policy name: value} of the qos_overrides.<topic_name>.subscription.* parameters given to the node
    (command line, parameter file, NodeOptions). Probed by declaring each one dynamically typed, which
    takes an override's value if there is one, and undeclaring it again; one already declared (by an
    earlier subscription on this topic) counts as given."""
    given = {}
    for policy in OVERRIDABLE:
        name = f'qos_overrides.{topic_name}.subscription.{policy.name.lower()}'
        if node.has_parameter(name):
            given[policy.name.lower()] = node.get_parameter(name).value
            continue
        value = node.declare_parameter(name, None, ParameterDescriptor(dynamic_typing=True)).value
        node.undeclare_parameter(name)
        if value is not None:
            given[policy.name.lower()] = value
    return given


class AdaptiveSubscription:
    """A subscription to `topic` whose QoS follows its publishers (module doc).

    node: rclpy Node; msg_type, topic, callback, callback_group: as Node.create_subscription (topic
    relative or absolute, remapped as usual). poll_s: seconds between graph checks (steady clock).
    Attributes: topic_name (resolved), qos (current QoSProfile), overridden (True: the user's
    qos_overrides fixed it). ValueError, one line, for an override that is not a valid policy value.
    """

    def __init__(self, node, msg_type, topic: str, callback, callback_group=None, poll_s: float = POLL_S):
        self._node, self._msg_type, self._topic, self._callback = node, msg_type, topic, callback
        self._callback_group = callback_group
        self._lock = threading.Lock()
        self.topic_name = node.resolve_topic_name(topic)
        self.overridden = bool(user_overrides(node, self.topic_name))
        qos = subscription_qos(node.get_publishers_info_by_topic(self.topic_name)) or qos_profile_sensor_data
        if self.overridden:  # rclpy writes the overrides into the profile it is given: a copy
            try:
                self._subscription = node.create_subscription(
                    msg_type, topic, callback, copy.copy(qos), callback_group=callback_group,
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(callback=_check_overrides))
            except (RuntimeError, ParameterException, InvalidQosOverridesError) as e:
                raise ValueError(f'qos_overrides.{self.topic_name}.subscription.*: {e}; accepted: reliability '
                                 'reliable / best_effort, history keep_last / keep_all, depth an integer >= 1') from None
            self._timer = None
        else:
            self._subscription = node.create_subscription(msg_type, topic, callback, qos, callback_group=callback_group)
            # not in callback_group: a callback there may wait long (node.Camera._on_image waits for its worker)
            self._timer = node.create_timer(poll_s, self._follow_publishers,
                                            clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._qos = self._subscription.qos_profile
        node.get_logger().info(f'{self.topic_name}: subscribed {describe(self._qos)}' +
                               (' (qos_overrides parameters)' if self.overridden else ''))

    @property
    def qos(self) -> QoSProfile:
        """The QoS of the current subscription (of the last one after destroy())."""
        return self._qos

    @property
    def subscription(self):
        """The current rclpy Subscription (replaced when the QoS changes)."""
        with self._lock:
            return self._subscription

    def _follow_publishers(self):
        publishers = self._node.get_publishers_info_by_topic(self.topic_name)
        qos = subscription_qos(publishers)
        with self._lock:
            if self._subscription is None or qos is None or qos == self._qos:
                return
            # the old reader goes first: two readers at once would deliver a message twice
            self._node.destroy_subscription(self._subscription)
            self._subscription = self._node.create_subscription(self._msg_type, self._topic, self._callback, qos,
                                                                callback_group=self._callback_group)
            self._qos = self._subscription.qos_profile
        self._node.get_logger().info(f'{self.topic_name}: {len(publishers)} publisher(s); subscribed {describe(qos)}')

    def take(self) -> tuple:
        """Drains the reader: (the newest message waiting, or None; the message info of every message taken,
        oldest first: rclpy's dict with publication_sequence_number, received_timestamp (ns) and the like).
        The others are taken serialized and never deserialized, so a flood costs a copy per message. Safe on
        any thread; nothing once destroyed."""
        with self._lock:
            subscription, taken = self._subscription, []
            if subscription is None:
                return None, []
            try:
                with subscription.handle:
                    while (sample := subscription.handle.take_message(self._msg_type, True)) is not None:
                        taken.append(sample)
            except InvalidHandle:  # destroyed meanwhile
                pass
        if not taken:
            return None, []
        return deserialize_message(taken[-1][0], self._msg_type), [info for _, info in taken]

    def destroy(self):
        """Destroy the subscription and its timer (idempotent)."""
        with self._lock:
            if self._timer is not None:
                self._node.destroy_timer(self._timer)
                self._timer = None
            if self._subscription is not None:
                self._node.destroy_subscription(self._subscription)
                self._subscription = None
