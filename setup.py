"""pip install . -> the superglue_ros core (models, matcher, CLI, demo) without ROS.

The ROS 2 package (messages, node executable, launch files) is built with colcon from CMakeLists.txt
and package.xml; see `make setup`. `pip install .[test]` adds the test tools, `pip install .[onnx]` the ONNX
export and the onnxruntime backend.
"""
from setuptools import find_packages, setup

setup(
    name='superglue_ros',
    version='0.1.0',
    description='SuperPoint + SuperGlue keyframe matching front-end for ROS 2',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['superglue_ros', 'superglue_ros.*']),
    install_requires=['torch', 'numpy', 'opencv-python-headless', 'safetensors', 'huggingface_hub~=2.4',
                      'rosbags~=0.11.9'],
    extras_require={'test': ['pytest', 'pytest-timeout', 'transformers'],
                    'onnx': ['onnx', 'onnxscript', 'onnxruntime']},  # export.py, backend onnxruntime (GPU: onnxruntime-gpu)
)
