//! The control node: Ansible inventory, ansible-vault, rendering client configs.
