"""The node's ROS parameters, derived from the one settings table (superglue_ros/settings.py).

Every row of SETTINGS is a parameter: its description and accepted values form the descriptor
(`ros2 param describe /superglue <name>`), settings that cannot change live are read-only, and a
value is accepted or refused by settings.check(), with the same message as the core and the CLI
give. Parameters are declared with dynamic typing so that this holds for the type too (5 for a
seconds parameter is 5.0; 1.5 for max_keypoints is refused with the accepted values). config/*.yaml
are the presets.
"""
import difflib

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException

from ..settings import SETTINGS, Setting, check


class ParameterError(ValueError):
    """A parameter value that is not accepted; the message is settings.check()'s."""


def descriptor(setting: Setting, managed: bool = False) -> ParameterDescriptor:
    """The descriptor of one setting: description, accepted values, read-only unless live. managed (the
    lifecycle node): a start-up setting is not read-only; the node takes it while unconfigured and configure
    applies it (SuperGlueNode._validate_parameters refuses it once configured)."""
    kind = type(setting.default).__name__ if not isinstance(setting.default, list) else \
        f'list of {type(setting.default[0]).__name__}' if setting.default else 'list'  # [] (stereo_pairs): a list
    return ParameterDescriptor(
        name=setting.name, description=setting.description, read_only=not (setting.live or managed),
        dynamic_typing=True, additional_constraints=f'{kind}; accepted: {setting.accepted}' + (
            '' if setting.live else ' (set while unconfigured, then configure)' if managed
            else ' (read-only: restart to change)'))


def declare(node, managed: bool = False) -> dict:
    """Declare every setting as a parameter of `node` (descriptor(setting, managed)); their checked values by name.
    ParameterError with settings.check()'s message when an override (command line, YAML) is refused."""
    values = {}
    for name, setting in SETTINGS.items():
        try:
            value = node.declare_parameter(name, setting.default, descriptor(setting, managed)).value
        except ParameterException as e:
            raise ParameterError(f"parameter '{name}': {e}") from None
        try:
            values[name] = check(name, value)
        except ValueError as e:  # rclpy reads an empty list ([] in YAML or -p) as a parameter without a value
            raise ParameterError(f'{e}{" (an empty list [] is read as no value)" if value is None else ""}') from None
    return values


def unknown_overrides(node) -> dict[str, list[str]]:
    """Parameters given to `node` (--params-file, -p) that it never declared, each with the declared
    names closest to it: rclpy ignores them silently, so a typo in a preset would go unnoticed.
    qos_overrides.* are left to rclpy, which reads them when a subscription is created."""
    overrides = getattr(node, '_parameter_overrides', {})  # rclpy's only record of them (private)
    declared = list(node.get_parameters_by_prefix(''))
    return {name: difflib.get_close_matches(name, declared, n=1) for name in sorted(overrides)
            if not node.has_parameter(name) and not name.startswith('qos_overrides.')}


def changes(parameters) -> dict:
    """Checked values of rclpy Parameters being set (an on-set callback's argument); ParameterError
    with settings.check()'s message for the first refused one. Names the node does not own pass through."""
    checked = {}
    for parameter in parameters:
        if parameter.name in SETTINGS:
            try:
                checked[parameter.name] = check(parameter.name, parameter.value)
            except ValueError as e:
                raise ParameterError(str(e)) from None
    return checked


def validate(changed) -> SetParametersResult:
    """On-set parameters callback: validates only (settings.check), as ros2/demos' on-set step; the
    node applies the values in its post-set callback."""
    try:
        changes(changed)
    except ParameterError as e:
        return SetParametersResult(successful=False, reason=str(e))
    return SetParametersResult(successful=True)
