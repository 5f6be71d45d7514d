"""Start the SuperGlue keyframe matcher for one or more cameras, optionally with rviz showing ~/match_image.

    ros2 launch superglue_ros superglue.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info config:=outdoor device:=cuda rviz:=true
    ros2 launch superglue_ros superglue.launch.py config:=stereo namespace:=stereo image:=image_raw
    ros2 launch superglue_ros superglue.launch.py lifecycle:=true   # managed: starts unconfigured

config is 'indoor', 'outdoor', 'stereo', 'cpu' (the presets in share/superglue_ros/config) or a path to a
YAML file. cameras, weights and device given here override the config file; left empty, it decides.
image / camera_info: with the unnamed camera, the topics it reads (any name); with named cameras
(cameras:=left,right or config:=stereo), the name under each camera: image:=image_raw reads
left/image_raw and right/image_raw, relative to the namespace.
lifecycle:=true starts the managed node (superglue_lifecycle_node, a launch_ros LifecycleNode): it waits
unconfigured for a lifecycle manager (nav2_lifecycle_manager, or `ros2 lifecycle set`) to configure and
activate it (README: Managed (lifecycle) node).
"""
import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'superglue_ros'
NODE_NAME = 'superglue'
PRESETS = ('indoor', 'outdoor', 'stereo', 'cpu')
ARGUMENTS = {  # name: (default, description)
    'image': ('image', 'Image topic of the unnamed camera; with named cameras, the image name under each camera'),
    'camera_info': ('camera_info', 'CameraInfo topic of the unnamed camera; with named cameras, the name under each'),
    'cameras': ('', "Comma-separated camera names (e.g. left,right); empty: from config (one unnamed camera)"),
    'config': ('indoor', "Parameter file: 'indoor', 'outdoor', 'stereo', 'cpu' or a path to a YAML file"),
    'superpoint_weights': ('', 'SuperPoint weights (preset, hub id, file or Hugging Face directory); empty: from config'),
    'superglue_weights': ('', 'SuperGlue weights (preset, hub id, file or Hugging Face directory); empty: from config'),
    'device': ('', 'auto, cuda or cpu; empty: from config'),
    'namespace': ('', 'Namespace of the node (and of the rviz topic)'),
    'rviz': ('false', 'Start rviz2 showing the match image of the first camera'),
    'lifecycle': ('false', 'Start the managed (lifecycle) node, unconfigured until a lifecycle manager configures it'),
}
TRUE = ('true', '1', 'yes')


def cameras_of(arg: dict, config_path: str) -> list[str]:
    """The camera names: the cameras argument, else the config file's `cameras`, else the unnamed one."""
    if arg['cameras'].strip():
        return [name.strip() for name in arg['cameras'].split(',') if name.strip()]
    with open(config_path) as f:
        content = yaml.safe_load(f) or {}
    for section in content.values():
        cameras = (section or {}).get('ros__parameters', {}).get('cameras')
        if cameras:
            return list(cameras)
    return ['']


def nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = FindPackageShare(PACKAGE).perform(context)
    config = arg['config']
    if config in PRESETS:
        config = os.path.join(share, 'config', f'{config}.yaml')
    cameras = cameras_of(arg, config)
    overrides = {name: arg[name] for name in ('superpoint_weights', 'superglue_weights', 'device') if arg[name]}
    if arg['cameras'].strip():
        overrides['cameras'] = cameras
    named = [camera for camera in cameras if camera]
    for topic in ('image', 'camera_info'):
        if named and arg[topic].startswith('/'):
            raise RuntimeError(f"{topic}:={arg[topic]} is an absolute topic, but the cameras {named} each need their "
                               f"own: give the name under each camera (e.g. {topic}:=image_raw reads "
                               f"{named[0]}/image_raw) and the driver's namespace with namespace:=")
    remappings = []
    for camera in cameras:
        prefix = f'{camera}/' if camera else ''
        for topic in ('image', 'camera_info'):
            remappings.append((f'{prefix}{topic}', f'{prefix}{arg[topic]}' if camera else arg[topic]))
    namespace = arg['namespace'].strip('/')

    managed = arg['lifecycle'].lower() in TRUE
    actions = [(LifecycleNode if managed else Node)(
        package=PACKAGE, executable='superglue_lifecycle_node' if managed else 'superglue_node', name=NODE_NAME,
        namespace=namespace, parameters=[config, overrides], remappings=remappings, output='screen', emulate_tty=True)]
    if arg['rviz'].lower() in TRUE:
        # The rviz config shows /superglue/match_image; point it at the first camera's topic.
        prefix = f'{cameras[0]}/' if cameras[0] else ''
        topic = f'/{NODE_NAME}/match_image'
        target = f'/{namespace}/{NODE_NAME}/{prefix}match_image' if namespace else f'/{NODE_NAME}/{prefix}match_image'
        actions.append(Node(
            package='rviz2', executable='rviz2', name='superglue_rviz', namespace=namespace,
            arguments=['-d', os.path.join(share, 'rviz', 'superglue.rviz')],
            remappings=[(topic, target)] if target != topic else [], output='screen'))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=nodes)])
