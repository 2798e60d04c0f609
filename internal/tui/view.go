package tui

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"banger/internal/api"
	"banger/internal/units"
)

// Glyphs of the operation panel (as in the CLI's progress output).
const (
	glyphRunning = "→"
	glyphDone    = "✓"
	glyphFailed  = "✗"
	glyphSkipped = "·"
	glyphPending = " "
	cursorMark   = "›"
	ellipsis     = "…"
	maxOpLines   = 7
)

// View renders the whole screen: exactly height lines, none wider than
// width, so redraws replace the previous frame without flicker.
func (m Model) View() string {
	w, h := m.width, m.height
	if w <= 0 || h <= 0 {
		return ""
	}
	top := []string{m.tabBar(), m.st.dim.Render(strings.Repeat("─", w))}
	var panel []string
	if m.op != nil && !m.help {
		panel = m.opPanel()
	}
	bottom := append(m.statusLines(), m.keyHints())
	bodyH := h - len(top) - len(panel) - len(bottom)
	if bodyH < 1 {
		panel, bodyH = nil, h-len(top)-len(bottom)
	}
	var body []string
	switch {
	case m.help:
		body = m.helpBody()
	case m.form != nil:
		body = m.formBody()
	default:
		switch m.view {
		case viewVMs:
			body = m.vmsBody(bodyH)
		case viewImages:
			body = m.imagesBody(bodyH)
		case viewSessions:
			body = m.sessionsBody(bodyH)
		case viewLogs:
			body = m.logsBody(bodyH)
		}
	}
	if len(body) > bodyH {
		body = body[:max(bodyH, 0)]
	}
	for len(body) < bodyH {
		body = append(body, "")
	}
	lines := append(append(append(top, body...), panel...), bottom...)
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		lines[i] = fit(l, w)
	}
	return strings.Join(lines, "\n")
}

// fit truncates a (possibly styled) line to w columns.
func fit(s string, w int) string {
	if ansi.StringWidth(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, ellipsis)
}

// cell pads or truncates plain text to exactly w columns.
func cell(s string, w int) string {
	sw := ansi.StringWidth(s)
	if sw > w {
		return ansi.Truncate(s, w, ellipsis)
	}
	return s + strings.Repeat(" ", w-sw)
}

// clean makes console output safe to print: escape sequences and other
// control characters removed, tabs expanded.
func clean(s string) string {
	s = ansi.Strip(s)
	s = strings.ReplaceAll(s, "\t", "    ")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

func (m Model) tabBar() string {
	var b strings.Builder
	b.WriteString(m.st.title.Render("banger"))
	for i, name := range viewNames {
		label := fmt.Sprintf("%d %s", i+1, name)
		if view(i) == m.view {
			b.WriteString(" " + m.st.tabOn.Render("["+label+"]"))
		} else {
			b.WriteString(" " + m.st.tabOff.Render(" "+label+" "))
		}
	}
	left := b.String()
	right := ""
	switch {
	case m.listErr != "":
		right = m.st.err.Render("daemon unreachable")
	case !m.updated.IsZero():
		right = m.st.dim.Render(fmt.Sprintf("%d vms · %s", len(m.vms), m.updated.Format("15:04:05")))
	}
	if gap := m.width - lipgloss.Width(left) - lipgloss.Width(right); right != "" && gap >= 1 {
		return left + strings.Repeat(" ", gap) + right
	}
	return left
}

// column is one column of a table.
type column struct {
	title string
	max   int  // widest the column grows
	prio  int  // lower is kept first when the terminal is narrow
	right bool // right-aligned
}

// layout picks the columns that fit in width (by priority) and their
// widths (their content's, capped at max). It returns the kept column
// indexes in display order and every column's width.
func layout(cols []column, rows [][]string, width int) ([]int, []int) {
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = ansi.StringWidth(c.title)
		for _, r := range rows {
			widths[i] = max(widths[i], ansi.StringWidth(r[i]))
		}
		widths[i] = min(widths[i], c.max)
	}
	order := make([]int, len(cols))
	for i := range order {
		order[i] = i
	}
	// Keep columns by priority while they fit (2 columns of cursor, one
	// space between columns).
	keep := make([]bool, len(cols))
	used := 2
	for p := 0; p <= len(cols); p++ {
		for i, c := range cols {
			if c.prio == p && used+widths[i]+1 <= width {
				keep[i] = true
				used += widths[i] + 1
			}
		}
	}
	var kept []int
	for _, i := range order {
		if keep[i] {
			kept = append(kept, i)
		}
	}
	return kept, widths
}

// table renders rows under a header; sel is the selected row (-1 for
// none) and styleCell may colour a cell of an unselected row.
func (m Model) table(cols []column, rows [][]string, sel, height int, styleCell func(col int, text string) string) []string {
	kept, widths := layout(cols, rows, m.width)
	render := func(r []string) []string {
		out := make([]string, 0, len(kept))
		for _, i := range kept {
			t := r[i]
			if cols[i].right {
				t = strings.Repeat(" ", max(0, widths[i]-ansi.StringWidth(t))) + t
			}
			out = append(out, cell(t, widths[i]))
		}
		return out
	}
	hdr := make([]string, len(cols))
	for i, c := range cols {
		hdr[i] = c.title
	}
	lines := []string{m.st.header.Render(strings.TrimRight("  "+strings.Join(render(hdr), " "), " "))}
	// Scroll so the selection stays visible.
	avail := max(height-1, 1)
	start := 0
	if sel >= avail {
		start = sel - avail + 1
	}
	for ri := start; ri < len(rows) && ri < start+avail; ri++ {
		cells := render(rows[ri])
		if ri == sel {
			lines = append(lines, m.st.selected.Render(strings.TrimRight(cursorMark+" "+strings.Join(cells, " "), " ")))
			continue
		}
		if styleCell != nil {
			for j, i := range kept {
				cells[j] = styleCell(i, cells[j])
			}
		}
		lines = append(lines, strings.TrimRight("  "+strings.Join(cells, " "), " "))
	}
	return lines
}

var vmColumns = []column{
	{title: "NAME", max: 24, prio: 0},
	{title: "STATE", max: 9, prio: 0},
	{title: "IMAGE", max: 16, prio: 2},
	{title: "IP", max: 15, prio: 1},
	{title: "DNS", max: 28, prio: 6},
	{title: "VCPU", max: 4, prio: 3, right: true},
	{title: "RAM", max: 6, prio: 3, right: true},
	{title: "DISK", max: 5, prio: 4, right: true},
	{title: "AGE", max: 4, prio: 4, right: true},
	{title: "CPU%", max: 6, prio: 1, right: true},
	{title: "RSS", max: 10, prio: 1, right: true},
}

const vmStateCol = 1

// vmsBody is the VM table plus the details of the selection.
func (m Model) vmsBody(height int) []string {
	if m.listErr != "" && len(m.vms) == 0 {
		var out []string
		for _, l := range wrap("cannot list VMs: "+m.listErr, m.width) {
			out = append(out, m.st.err.Render(l))
		}
		return out
	}
	if len(m.vms) == 0 {
		if m.updated.IsZero() {
			return []string{m.st.dim.Render("loading…")}
		}
		return []string{"no VMs yet: press c to create one"}
	}
	now := m.now()
	rows := make([][]string, len(m.vms))
	sel := -1
	for i, v := range m.vms {
		if v.ID == m.selID {
			sel = i
		}
		rows[i] = m.vmRow(v, now)
	}
	details := m.vmDetails()
	tableH := max(height-len(details)-1, 2)
	lines := m.table(vmColumns, rows, sel, tableH, func(col int, t string) string {
		if col == vmStateCol {
			return m.st.state(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(t), ellipsis))).Render(t)
		}
		return t
	})
	if len(details) > 0 {
		for len(lines) < height-len(details) {
			lines = append(lines, "")
		}
		lines = append(lines, details...)
	}
	return lines
}

func (m Model) vmRow(v api.VM, now time.Time) []string {
	state := v.State
	if p := m.pending[v.ID]; p != "" {
		state = p + ellipsis
	}
	img := v.ImageName
	if img == "" {
		img = units.ShortID(v.ImageID)
	}
	cpu, rss := "-", "-"
	if u, ok := m.procs[v.ID]; ok {
		rss = units.Bytes(u.RSS)
		if u.HaveCPU {
			cpu = fmt.Sprintf("%.0f%%", u.CPU)
		}
	}
	return []string{
		v.Name, state, img, dash(v.IP), v.DNSName,
		fmt.Sprint(v.Spec.VCPU), fmt.Sprintf("%dM", v.Spec.MemoryMiB), units.FormatSize(v.Spec.DiskBytes),
		age(v.CreatedAt, now), cpu, rss,
	}
}

// vmDetails describes the selected VM in full (what narrow tables drop).
func (m Model) vmDetails() []string {
	v, ok := m.selected()
	if !ok {
		return nil
	}
	img := v.ImageName
	if img == "" {
		img = units.ShortID(v.ImageID) + " (image gone)"
	}
	l1 := fmt.Sprintf("%s · %s · %s · %s · %s · %s", v.Name, v.State, img, dash(v.IP), v.DNSName, v.VMM)
	l2 := fmt.Sprintf("%d vcpu · %d MiB · %s disk · id %s", v.Spec.VCPU, v.Spec.MemoryMiB, units.FormatSize(v.Spec.DiskBytes), units.ShortID(v.ID))
	if v.PID != 0 {
		l2 += fmt.Sprintf(" · pid %d", v.PID)
		if u, ok := m.procs[v.ID]; ok && u.HaveCPU {
			l2 += fmt.Sprintf(" · vmm %.1f%% cpu, %s rss", u.CPU, units.Bytes(u.RSS))
		}
	}
	out := []string{m.st.dim.Render(strings.Repeat("─", m.width)), l1, m.st.dim.Render(l2)}
	if g := m.guest; g != nil && g.ID == v.ID {
		out = append(out, m.st.dim.Render(fmt.Sprintf("guest %.0f%% cpu · %s/%s mem · load %.2f · /root %s/%s · overlay %s/%s · rx %s/s tx %s/s",
			g.CPUPercent, units.Bytes(int64(min(g.MemUsed, 1<<62))), units.Bytes(int64(min(g.MemTotal, 1<<62))), g.Load[0],
			units.Bytes(int64(min(g.Root.Used, 1<<62))), units.Bytes(int64(min(g.Root.Size, 1<<62))),
			units.Bytes(int64(min(g.Overlay.Used, 1<<62))), units.Bytes(int64(min(g.Overlay.Size, 1<<62))),
			units.Bytes(int64(min(g.RxRate, 1<<62))), units.Bytes(int64(min(g.TxRate, 1<<62))))))
	}
	if v.LastError != "" {
		out = append(out, m.st.err.Render("last error: "+v.LastError))
	}
	return out
}

var imageColumns = []column{
	{title: "NAME", max: 24, prio: 0},
	{title: "SOURCE", max: 30, prio: 2},
	{title: "SIZE", max: 10, prio: 1, right: true},
	{title: "INIT", max: 7, prio: 3},
	{title: "KERNEL", max: 16, prio: 4},
	{title: "CREATED", max: 16, prio: 2},
	{title: "USED BY", max: 30, prio: 1},
}

func (m Model) imagesBody(height int) []string {
	if len(m.images) == 0 {
		return []string{"no images yet: creating a VM builds or pulls the default image"}
	}
	rows := make([][]string, len(m.images))
	for i, im := range m.images {
		rows[i] = []string{im.Name, im.Source.String(), units.Bytes(im.SizeBytes), dash(im.Init), dash(im.KernelVersion),
			when(im.Created), dash(strings.Join(im.UsedBy, ","))}
	}
	return m.table(imageColumns, rows, m.imgCursor, height, nil)
}

var sessionColumns = []column{
	{title: "NAME", max: 16, prio: 0},
	{title: "STATE", max: 8, prio: 0},
	{title: "PID", max: 7, prio: 2, right: true},
	{title: "PTY", max: 3, prio: 3},
	{title: "STARTED", max: 8, prio: 2},
	{title: "COMMAND", max: 60, prio: 1},
}

func (m Model) sessionsBody(height int) []string {
	v, ok := m.selected()
	if !ok {
		return []string{"no VM selected"}
	}
	title := fmt.Sprintf("sessions of %s", v.Name)
	switch {
	case m.sessionsErr != "":
		return []string{title, m.st.dim.Render(m.sessionsErr)}
	case m.sessionsFor != v.ID:
		return []string{title, m.st.dim.Render("loading…")}
	case len(m.sessions) == 0:
		return []string{title, "no sessions"}
	}
	rows := make([][]string, len(m.sessions))
	for i, s := range m.sessions {
		pty := "no"
		if s.PTY {
			pty = "yes"
		}
		pid := "-"
		if s.PID > 0 {
			pid = fmt.Sprint(s.PID)
		}
		rows[i] = []string{s.Name, s.State, pid, pty, s.StartedAt.Local().Format("15:04:05"), strings.Join(s.Command, " ")}
	}
	return append([]string{title}, m.table(sessionColumns, rows, clamp(m.sessCursor, len(rows)), height-1, nil)...)
}

func (m Model) logsBody(height int) []string {
	v, ok := m.selected()
	if !ok {
		return []string{"no VM selected"}
	}
	title := fmt.Sprintf("console of %s", v.Name)
	switch {
	case m.logReader != nil && v.State == "running":
		title += " (following)"
	case m.logErr != "":
		title += ": " + m.logErr
	}
	lines := []string{m.st.header.Render(title)}
	src := m.logLines
	if m.logPartial != "" {
		src = append(src[:len(src):len(src)], m.logPartial)
	}
	if len(src) == 0 {
		return append(lines, m.st.dim.Render("(empty)"))
	}
	if n := height - 1; len(src) > n {
		src = src[len(src)-n:]
	}
	for _, l := range src {
		lines = append(lines, clean(l))
	}
	return lines
}

func (m Model) formBody() []string {
	f := m.form
	lines := []string{m.st.header.Render("create a VM"), ""}
	for i := range f.inputs {
		mark := "  "
		if i == f.focus {
			mark = cursorMark + " "
		}
		lines = append(lines, fmt.Sprintf("%s%-11s %s", mark, fieldLabels[i], f.inputs[i].view(i == f.focus)))
	}
	vmm := f.vmm
	if vmm == "" {
		vmm = "auto"
	}
	lines = append(lines, "", m.st.dim.Render("vmm "+vmm+" · empty name: generated · disk like 8G"))
	if f.err != "" {
		lines = append(lines, m.st.err.Render(f.err))
	}
	return lines
}

// keyHelp lists every key.
var keyHelp = [][2]string{
	{"tab / shift+tab, 1-4", "switch view (VMs, Images, Sessions, Logs)"},
	{"↑ ↓ / k j", "move the selection"},
	{"c", "create a VM (form with the defaults)"},
	{"s", "start the selected VM"},
	{"x", "stop the selected VM"},
	{"r", "restart the selected VM"},
	{"d", "delete the selected VM (asks first)"},
	{"e / enter", "ssh into the selected VM"},
	{"a", "attach to the selected session"},
	{"l", "console log of the selected VM"},
	{"C", "cancel the running operation (rolls back)"},
	{"esc", "dismiss the operation panel and message"},
	{"?", "this help"},
	{"q / ctrl+c", "quit (operations keep running)"},
}

func (m Model) helpBody() []string {
	lines := []string{m.st.header.Render("keys"), ""}
	for _, k := range keyHelp {
		lines = append(lines, fmt.Sprintf("  %s  %s", m.st.key.Render(cell(k[0], 20)), k[1]))
	}
	return append(lines, "", m.st.dim.Render("press any key to close"))
}

// opPanel shows the followed operation: a title line and its stages.
func (m Model) opPanel() []string {
	op := m.op
	end := op.finished
	if end.IsZero() {
		end = m.now()
	}
	elapsed := end.Sub(op.started).Round(time.Second)
	state := string(op.state)
	if op.canceling && op.running() {
		state = "canceling, rolling back"
	}
	title := fmt.Sprintf("%s %s · %s · %s", op.kind, op.target, m.st.state(string(op.state)).Render(state), elapsed)
	if op.running() && !op.canceling {
		title += "  " + m.st.key.Render("C") + " cancel"
	} else if !op.running() {
		title += "  " + m.st.key.Render("esc") + " dismiss"
	}
	var stages []string
	for _, s := range op.stages {
		if s.Name == "" || (s.State == api.StageSkipped && s.Started.IsZero() && s.Detail == "") {
			continue
		}
		stages = append(stages, m.stageLine(s))
	}
	if n := len(op.log); n > 0 && op.running() {
		stages = append(stages, m.st.dim.Render("  "+clean(op.log[n-1])))
	}
	if op.err != "" && !op.running() {
		stages = append(stages, m.st.err.Render("  "+op.err))
	}
	if len(stages) > maxOpLines-1 {
		stages = stages[len(stages)-(maxOpLines-1):]
	}
	return append([]string{m.st.dim.Render(strings.Repeat("─", m.width)), title}, stages...)
}

func (m Model) stageLine(s api.Stage) string {
	var g string
	switch s.State {
	case api.StageRunning:
		g = glyphRunning
	case api.StageDone:
		g = glyphDone
	case api.StageFailed:
		g = glyphFailed
	case api.StageSkipped:
		g = glyphSkipped
	default:
		g = glyphPending
	}
	line := fmt.Sprintf("  %s %s", m.st.state(string(s.State)).Render(g), s.Name)
	if s.State != api.StagePending {
		line += " " + m.st.dim.Render(s.Duration.Round(100*time.Millisecond).String())
	}
	if s.Progress != nil && s.Progress.Total > 0 {
		line += fmt.Sprintf(" %d%%", s.Progress.Done*100/s.Progress.Total)
	}
	if s.Detail != "" {
		line += " " + clean(s.Detail)
	}
	return line
}

// statusLines is the message line: a confirmation question, an error
// (wrapped to two lines at most) or information.
func (m Model) statusLines() []string {
	var text string
	style := m.st.warn
	switch {
	case m.confirm != nil:
		text = fmt.Sprintf("delete vm %s and everything it owns? y deletes, any other key keeps it", m.confirm.Name)
	case m.status == "":
		return []string{""}
	case m.statusErr:
		text, style = "error: "+m.status, m.st.err
	default:
		return []string{m.status}
	}
	ls := wrap(text, m.width)
	if len(ls) > 2 {
		ls = ls[:2]
	}
	for i, l := range ls {
		ls[i] = style.Render(l)
	}
	return ls
}

// wrap breaks plain text into lines of at most w columns at spaces
// (words longer than w are cut by fit later).
func wrap(s string, w int) []string {
	var out []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case ansi.StringWidth(line)+1+ansi.StringWidth(word) <= w:
			line += " " + word
		default:
			out = append(out, line)
			line = word
		}
	}
	return append(out, line)
}

// keyHints is the bottom line: the keys that matter in the current state.
func (m Model) keyHints() string {
	var hints [][2]string
	switch {
	case m.help:
		return m.st.key.Render("any key") + " close"
	case m.form != nil:
		hints = [][2]string{{"tab", "next field"}, {"enter", "create"}, {"esc", "cancel"}}
	case m.confirm != nil:
		hints = [][2]string{{"y", "delete"}, {"n", "keep"}}
	default:
		if m.op.running() {
			hints = append(hints, [2]string{"C", "cancel op"})
		}
		if m.view == viewSessions {
			hints = append(hints, [2]string{"a", "attach"})
		}
		hints = append(hints, [][2]string{{"c", "create"}, {"s", "start"}, {"x", "stop"}, {"r", "restart"}, {"d", "delete"}, {"e", "ssh"}}...)
		if m.view != viewSessions {
			hints = append(hints, [2]string{"l", "logs"})
		}
		hints = append(hints, [2]string{"tab", "view"})
	}
	hints = append(hints, [2]string{"?", "keys"}, [2]string{"q", "quit"})
	// The last two (help and quit) are always shown; others while they fit.
	render := func(h [2]string) (string, int) {
		return m.st.key.Render(h[0]) + " " + h[1], ansi.StringWidth(h[0]) + 1 + ansi.StringWidth(h[1]) + 2
	}
	width := 0
	for _, h := range hints[len(hints)-2:] {
		_, w := render(h)
		width += w
	}
	var parts []string
	for i, h := range hints {
		p, w := render(h)
		if i < len(hints)-2 {
			if width+w > m.width {
				continue
			}
			width += w
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "  ")
}

// when renders a timestamp for a table ("-" when unknown).
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age renders how long ago t was, compactly: 45s, 12m, 3h, 9d.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
