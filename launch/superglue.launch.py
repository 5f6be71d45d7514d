"""Start the SuperGlue keyframe matcher, optionally with rviz showing ~/match_image.

    ros2 launch superglue_ros superglue.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info config:=outdoor device:=cuda rviz:=true

config is 'indoor', 'outdoor' (the presets in share/superglue_ros/config) or a path to a YAML file.
Weights and device given here override the config file; left empty, the config file decides.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'superglue_ros'
NODE_NAME = 'superglue'
ARGUMENTS = {  # name: (default, description)
    'image': ('image', 'Image topic to match (sensor_msgs/Image)'),
    'camera_info': ('camera_info', 'CameraInfo topic of that camera'),
    'config': ('indoor', "Parameter file: 'indoor', 'outdoor' or a path to a YAML file"),
    'superpoint_weights': ('', 'SuperPoint weights (preset, file or Hugging Face directory); empty: from config'),
    'superglue_weights': ('', 'SuperGlue weights (preset, file or Hugging Face directory); empty: from config'),
    'device': ('', 'auto, cuda or cpu; empty: from config'),
    'namespace': ('', 'Namespace of the node (and of the rviz topic)'),
    'rviz': ('false', 'Start rviz2 showing the match image'),
}


def nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = FindPackageShare(PACKAGE).perform(context)
    config = arg['config']
    if config in ('indoor', 'outdoor'):
        config = os.path.join(share, 'config', f'{config}.yaml')
    overrides = {name: arg[name] for name in ('superpoint_weights', 'superglue_weights', 'device') if arg[name]}
    namespace = arg['namespace'].strip('/')

    actions = [Node(
        package=PACKAGE, executable='superglue_node', name=NODE_NAME, namespace=namespace,
        parameters=[config, overrides],
        remappings=[('image', arg['image']), ('camera_info', arg['camera_info'])],
        output='screen', emulate_tty=True)]
    if arg['rviz'].lower() in ('true', '1', 'yes'):
        # The rviz config shows /superglue/match_image; point it at the namespaced topic.
        topic = f'/{NODE_NAME}/match_image'
        actions.append(Node(
            package='rviz2', executable='rviz2', name='superglue_rviz', namespace=namespace,
            arguments=['-d', os.path.join(share, 'rviz', 'superglue.rviz')],
            remappings=[(topic, f'/{namespace}{topic}')] if namespace else [],
            output='screen'))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=nodes)])
