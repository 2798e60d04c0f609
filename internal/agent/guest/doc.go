// Package guest is the guest half of banger-agent beyond the API server:
// finding and mounting the config drive, applying the VM identity (as a
// pure function over a filesystem root plus a small System interface),
// serving the agent API on vsock and on the virtio-serial port, and
// running as PID 1 in images without an init system.
package guest
