"""The ROS layer: the only part of op3_walk that imports rospy or the generated messages.

Node classes own publishers, subscribers, services and parameters and delegate to the ROS-free core.
"""
