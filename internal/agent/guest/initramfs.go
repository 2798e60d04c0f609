package guest

import (
	"strings"
)

// bootParams is what the initramfs reads from the kernel command line.
type bootParams struct {
	// values holds NAME=VALUE words (the last one wins).
	values map[string]string
	// moduleParams holds, per module (canonical name), its MODULE.PARAM=VALUE
	// words as PARAM=VALUE: modprobe passes these from the command line,
	// and without modprobe the initramfs must (Firecracker describes its
	// virtio-mmio devices as virtio_mmio.device=...).
	moduleParams map[string][]string
}

// parseBootParams splits a kernel command line. Quoting is not handled:
// banger's command lines have none.
func parseBootParams(cmdline string) bootParams {
	p := bootParams{values: map[string]string{}, moduleParams: map[string][]string{}}
	for _, w := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			p.values[w] = ""
			continue
		}
		p.values[k] = v
		if mod, param, ok := strings.Cut(k, "."); ok && mod != "" && param != "" {
			mod = strings.ReplaceAll(mod, "-", "_")
			p.moduleParams[mod] = append(p.moduleParams[mod], param+"="+v)
		}
	}
	return p
}

// moduleName is the canonical name of the module file at path.
func moduleName(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}
