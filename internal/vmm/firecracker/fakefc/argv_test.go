package main

import (
	"slices"
	"strings"
	"testing"

	"banger/internal/vmm/qemu"
)

// TestQEMUArgv checks that the configuration received over the API
// becomes the QEMU command line: kernel, initrd and boot_args (with the
// TCG clock hint), drives in configuration order with their read-only
// flags, the tap and MAC, the machine's shape, the console on stdio (or
// the serial_out_path), and the QEMU driver's sandbox and -no-reboot.
func TestQEMUArgv(t *testing.T) {
	f := &fake{
		id: "vm1", machine: map[string]any{"vcpu_count": float64(2), "mem_size_mib": float64(512)},
		kernel: "/img/vmlinux", initrd: "/img/initrd.img", bootArgs: "console=ttyS0 reboot=k",
		tap: "bgt0123", mac: "02:00:00:00:00:01",
	}
	f.putDrive(driveCfg{id: "rootfs", path: "/img/rootfs.ext4", readOnly: true})
	f.putDrive(driveCfg{id: "overlay", path: "/vm/overlay.ext4"})
	f.putDrive(driveCfg{id: "rootfs", path: "/img/rootfs2.ext4", readOnly: true}) // keeps its place
	argv := qemuArgv(f.spec("/vm/api.sock.qemu"), qemu.Options{Binary: "/usr/bin/qemu-system-x86_64", HostKHz: 2000000}, "")
	joined := strings.Join(argv, " ")
	for _, want := range []string{
		"-kernel /img/vmlinux", "-initrd /img/initrd.img",
		"-append console=ttyS0 reboot=k tsc_early_khz=2000000",
		"-m 512", "-smp 2", "-accel tcg",
		"-drive id=rootfs,file=/img/rootfs2.ext4,format=raw,if=none,readonly=on",
		"-drive id=overlay,file=/vm/overlay.ext4,format=raw,if=none -device",
		"ifname=bgt0123,", "mac=02:00:00:00:00:01",
		"-chardev stdio,id=console,signal=off",
		"path=/vm/api.sock.qemu/agent.sock", "unix:/vm/api.sock.qemu/qmp.sock",
		"-no-reboot", "-sandbox " + qemu.Sandbox,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("argv lacks %q:\n%s", want, joined)
		}
	}
	if strings.Index(joined, "id=rootfs,") > strings.Index(joined, "id=overlay,") {
		t.Errorf("drives out of configuration order:\n%s", joined)
	}
	if slices.ContainsFunc(argv, func(a string) bool { return strings.HasPrefix(a, "file,id=console") }) {
		t.Errorf("console still goes to a file:\n%s", joined)
	}
	argv = qemuArgv(f.spec("/vm/api.sock.qemu"), qemu.Options{}, "/vm/serial,out")
	if !slices.Contains(argv, "file,id=console,path=/vm/serial,,out,append=on") {
		t.Errorf("serial_out_path not the console:\n%s", strings.Join(argv, " "))
	}
}
