"""The demo: a sequence publisher and the node in separate processes over DDS, with a summary.

    python -m superglue_ros.demo                    synthetic sequence with ground truth (default)
    python -m superglue_ros.demo --source DIR|VIDEO|BAG
    python -m superglue_ros.demo.publisher SOURCE   publish a source on `image` + `camera_info`
    python -m superglue_ros.demo.synthetic DIR      write the synthetic sequence

synthetic.py and summary.py import no ROS package; sources.py needs rclpy only for bags.
"""
