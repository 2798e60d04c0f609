package tui

import "github.com/charmbracelet/lipgloss"

// styles are the dashboard's looks, built from one renderer so that its
// colour profile decides: under NO_COLOR (or without a terminal) every
// style renders plain text, which is why selection and the active tab
// are also marked with characters ("›", "[VMs]").
type styles struct {
	title, tabOn, tabOff, header, selected, dim, key lipgloss.Style
	err, ok, warn                                    lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	if r == nil {
		r = lipgloss.DefaultRenderer()
	}
	s := r.NewStyle
	return styles{
		title:    s().Bold(true).Foreground(lipgloss.Color("6")),
		tabOn:    s().Bold(true).Foreground(lipgloss.Color("0")).Background(lipgloss.Color("6")),
		tabOff:   s().Foreground(lipgloss.Color("8")),
		header:   s().Bold(true).Foreground(lipgloss.Color("4")),
		selected: s().Reverse(true),
		dim:      s().Foreground(lipgloss.Color("8")),
		key:      s().Bold(true).Foreground(lipgloss.Color("3")),
		err:      s().Foreground(lipgloss.Color("1")),
		ok:       s().Foreground(lipgloss.Color("2")),
		warn:     s().Foreground(lipgloss.Color("3")),
	}
}

// state colours a VM, session or stage state.
func (st styles) state(s string) lipgloss.Style {
	switch s {
	case "running", "done", "succeeded":
		return st.ok
	case "failed", "lost":
		return st.err
	case "stopped", "exited", "skipped", "canceled":
		return st.dim
	}
	return st.warn
}
