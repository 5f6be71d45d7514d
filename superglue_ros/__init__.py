"""superglue_ros: SuperPoint + SuperGlue keyframe matching front-end for ROS 2.

The model and pipeline modules import no ROS package. The rosidl-generated interfaces
(superglue_ros.msg, superglue_ros.srv) are installed by the ROS build into another directory
named superglue_ros; extend_path merges it with this one.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
