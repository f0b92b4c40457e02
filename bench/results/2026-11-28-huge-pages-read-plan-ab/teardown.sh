#!/bin/bash
umount /var/tmp/exp/mnt; sleep 1; losetup -d $(cat /var/tmp/exp/loop)
