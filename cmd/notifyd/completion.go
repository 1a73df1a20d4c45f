package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Shell completion scripts, generated from the command tree (commands(),
// subcommands() and each command's own flags as its --help lists them), so
// a new command or flag is completed without touching this file. The CLI
// is plain flag.FlagSets, not cobra: the scripts are small enough to write
// out directly.

var completionShells = []string{"bash", "zsh", "fish"}

func runCompletion(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("completion", `completion bash|zsh|fish

Prints a completion script for notifyd's commands, subcommands and flags.
  bash:  source <(notifyd completion bash)          (or save it as /etc/bash_completion.d/notifyd)
  zsh:   source <(notifyd completion zsh)           (or save it as _notifyd in a directory of $fpath)
  fish:  notifyd completion fish > ~/.config/fish/completions/notifyd.fish`, stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	tree := completionTree()
	switch pos[0] {
	case "bash":
		writeBash(stdout, tree)
	case "zsh":
		writeZsh(stdout, tree)
	case "fish":
		writeFish(stdout, tree)
	default:
		fmt.Fprintf(stderr, "notifyd completion: unknown shell %q (bash, zsh or fish)\n", pos[0])
		return 2
	}
	return 0
}

// compNode is one command or subcommand for the completion scripts.
type compNode struct {
	name, summary string
	flags         []flagInfo
	subs          []compNode
}

func completionTree() []compNode {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	tree := make([]compNode, 0, len(names))
	for _, n := range names {
		node := compNode{name: n, summary: cmds[n].summary}
		if subs := subcommands(n); subs != nil {
			for _, s := range subs {
				node.subs = append(node.subs, compNode{name: s, summary: subSummary(n, s), flags: flagsOf([]string{n, s})})
			}
		} else {
			node.flags = flagsOf([]string{n})
		}
		tree = append(tree, node)
	}
	return tree
}

// subSummary is one line about a subcommand, for zsh and fish.
func subSummary(cmd, sub string) string {
	switch cmd {
	case "campaign":
		return campaignVerbs()[sub].summary
	case "flow":
		return flowVerbs()[sub].summary
	}
	return map[string]string{
		"trigger send":    "fire flow triggers from a file or flags",
		"shard build":     "build a shard file from profiles (JSON Lines or CSV)",
		"shard inspect":   "print a shard file's header, ring and rows",
		"shard generate":  "generate a synthetic shard",
		"bench fanout":    "one campaign over every channel's fake",
		"bench fleet":     "one campaign over N shards' daemons",
		"bench trigger":   "trigger latency at a steady rate",
		"bench email":     "the email sender against a reference client",
		"bench webhook":   "the webhook sender against a reference client",
		"config check":    "check config files: every problem at once",
		"completion bash": "bash completion script",
		"completion zsh":  "zsh completion script",
		"completion fish": "fish completion script",
	}[cmd+" "+sub]
}

func names(nodes []compNode) string {
	s := make([]string, len(nodes))
	for i, n := range nodes {
		s[i] = n.name
	}
	return strings.Join(s, " ")
}

func dashedFlags(flags []flagInfo) string {
	s := make([]string, len(flags))
	for i, f := range flags {
		s[i] = f.dashed()
	}
	return strings.Join(s, " ")
}

func writeBash(w io.Writer, tree []compNode) {
	fmt.Fprint(w, `# bash completion for notifyd (notifyd completion bash)
_notifyd() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmd="${COMP_WORDS[1]}" subs="" key flags=""
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "`+names(tree)+`" -- "$cur"))
        return
    fi
    case "$cmd" in
`)
	for _, n := range tree {
		if n.subs != nil {
			fmt.Fprintf(w, "        %s) subs=%q ;;\n", n.name, names(n.subs))
		}
	}
	fmt.Fprint(w, `    esac
    key="$cmd"
    if [[ -n $subs ]]; then
        if [[ $COMP_CWORD -eq 2 ]]; then
            COMPREPLY=($(compgen -W "$subs" -- "$cur"))
            return
        fi
        key="$cmd ${COMP_WORDS[2]}"
    fi
    case "$key" in
`)
	for _, n := range tree {
		if n.subs == nil {
			fmt.Fprintf(w, "        %q) flags=%q ;;\n", n.name, dashedFlags(n.flags))
		}
		for _, s := range n.subs {
			fmt.Fprintf(w, "        %q) flags=%q ;;\n", n.name+" "+s.name, dashedFlags(s.flags))
		}
	}
	fmt.Fprint(w, `    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    fi
    # Anything else (a file, an ID) falls back to bash's default completion.
}
complete -o default -F _notifyd notifyd
`)
}

// zshQuote quotes s for a single-quoted zsh word.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// describe is a "name:summary" word for _describe (colons in names escaped).
func describe(name, summary string) string {
	return zshQuote(strings.ReplaceAll(name, ":", `\:`) + ":" + summary)
}

func writeZsh(w io.Writer, tree []compNode) {
	fmt.Fprint(w, "#compdef notifyd\n# zsh completion for notifyd (notifyd completion zsh)\n_notifyd() {\n    local -a items\n    if (( CURRENT == 2 )); then\n        items=(\n")
	for _, n := range tree {
		fmt.Fprintf(w, "            %s\n", describe(n.name, n.summary))
	}
	fmt.Fprint(w, "        )\n        _describe 'command' items\n        return\n    fi\n    local key=$words[2]\n    case $words[2] in\n")
	for _, n := range tree {
		if n.subs == nil {
			continue
		}
		fmt.Fprintf(w, "        %s)\n            if (( CURRENT == 3 )); then\n                items=(\n", n.name)
		for _, s := range n.subs {
			fmt.Fprintf(w, "                    %s\n", describe(s.name, s.summary))
		}
		fmt.Fprint(w, "                )\n                _describe 'subcommand' items\n                return\n            fi\n            key=\"$words[2] $words[3]\" ;;\n")
	}
	fmt.Fprint(w, "    esac\n    items=()\n    case $key in\n")
	flagCase := func(key string, flags []flagInfo) {
		fmt.Fprintf(w, "        %s) items=(", zshQuote(key))
		for _, f := range flags {
			fmt.Fprintf(w, " %s", describe(f.dashed(), f.usage))
		}
		fmt.Fprint(w, " ) ;;\n")
	}
	for _, n := range tree {
		if n.subs == nil {
			flagCase(n.name, n.flags)
		}
		for _, s := range n.subs {
			flagCase(n.name+" "+s.name, s.flags)
		}
	}
	fmt.Fprint(w, `    esac
    if [[ $PREFIX == -* ]]; then
        _describe 'flag' items
    else
        _files
    fi
}
if [[ "${funcstack[1]}" == "_notifyd" ]]; then
    _notifyd "$@"
else
    compdef _notifyd notifyd
fi
`)
}

// fishQuote quotes s for a single-quoted fish word.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func writeFish(w io.Writer, tree []compNode) {
	fmt.Fprintln(w, "# fish completion for notifyd (notifyd completion fish)")
	all := names(tree)
	for _, n := range tree {
		fmt.Fprintf(w, "complete -c notifyd -f -n 'not __fish_seen_subcommand_from %s' -a %s -d %s\n", all, n.name, fishQuote(n.summary))
	}
	flagLines := func(cond string, flags []flagInfo) {
		for _, f := range flags {
			opt := "-l " + f.name
			if len(f.name) == 1 {
				opt = "-s " + f.name
			}
			req := ""
			if f.value {
				req = " -r"
			}
			fmt.Fprintf(w, "complete -c notifyd -n %s %s%s -d %s\n", fishQuote(cond), opt, req, fishQuote(f.usage))
		}
	}
	for _, n := range tree {
		if n.subs == nil {
			flagLines("__fish_seen_subcommand_from "+n.name, n.flags)
			continue
		}
		subs := names(n.subs)
		for _, s := range n.subs {
			fmt.Fprintf(w, "complete -c notifyd -f -n '__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s' -a %s -d %s\n", n.name, subs, s.name, fishQuote(s.summary))
		}
		for _, s := range n.subs {
			flagLines("__fish_seen_subcommand_from "+n.name+"; and __fish_seen_subcommand_from "+s.name, s.flags)
		}
	}
}
