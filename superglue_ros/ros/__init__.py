"""ROS-only helpers of the node: image message <-> numpy (image_conversion), the parameter table
(parameters). Everything else in superglue_ros imports no ROS package."""
