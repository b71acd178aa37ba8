"""cifarlab's widget code against whichever ipywidgets this Python imports (run as a script).

tests/test_ipywidgets7.py runs it twice, in subprocesses: with the project's ipywidgets 8, and with
ipywidgets 7.7.1 (what Colab ships) first on PYTHONPATH. It prints one JSON line of what it saw:

* the picker built, and driven from code (list selection, superclass, "add this superclass",
  filter, clear), with every state update replayed as the widget front end applies it;
* the picker's state serialized (widget manager state, as a notebook saves it);
* the notebook view of two real three-epoch training runs, one after another through one view (a
  grid): the tqdm widget bar and the figure redrawn in place, one of each on screen at a time, with
  IPython's display messages recorded and applied the way a front end does (``clear_output(wait=True)``
  clears when the next output arrives).
"""
import json
import sys


def replay(select, action):
    """Replay what ``action`` sends to the widget front end, one state update per trait change, in order,
    the way the front end applies them: the selection is kept as positions (``index``) into the option
    labels, and the current positions are applied again to every new list of labels.

    Returns (the positions that pointed past the list when they were applied - what the browser console
    reports as "Error setting state: Cannot set properties of undefined (setting 'selected')" - and the
    class ids highlighted at the end, sorted). tests/test_widgets.py uses it too."""
    state = {"labels": list(select._options_labels), "index": list(select.index)}
    bad = []

    def receive(change):
        state["labels" if change["name"] == "_options_labels" else "index"] = list(change["new"])
        bad.extend(i for i in state["index"] if i >= len(state["labels"]))

    select.observe(receive, names=["_options_labels", "index"])
    try:
        action()
    finally:
        select.unobserve(receive, names=["_options_labels", "index"])
    return bad, sorted(int(state["labels"][i].split(":")[0]) for i in state["index"])


def picker_checks() -> dict:
    import ipywidgets

    from cifarlab.widgets import ALL, ClassPicker

    p = ClassPicker([0, 55, 58])
    out = {"ipywidgets": ipywidgets.__version__, "ipywidgets_file": ipywidgets.__file__,
           "ids0": p.ids, "n_options0": len(p.select.options), "first3": [v for _, v in p.select.options[:3]],
           "gallery": [(b.children[1].value[:4] == b"\x89PNG", b.children[1].format) for b in p.gallery.children],
           "sources": {str(k): v for k, v in p.thumbnail_sources.items()}}
    steps = []

    def step(name, action):
        bad, highlighted = replay(p.select, action)
        steps.append({"step": name, "past_the_end": bad, "highlighted": highlighted, "ids": p.ids,
                      "command": p.make_command, "message": p.message.value})

    step("list: apple + bicycle", lambda: setattr(p.select, "value", (0, 8)))
    step("superclass vehicles_1", lambda: setattr(p.superclass, "value", "vehicles_1"))
    step("add this superclass", p.add_group.click)          # Button.click() runs the on_click handlers
    step("superclass flowers", lambda: setattr(p.superclass, "value", "flowers"))
    step("filter tr", lambda: setattr(p.filter, "value", "tr"))
    step("all superclasses", lambda: (setattr(p.filter, "value", ""), setattr(p.superclass, "value", ALL)))
    out["first_options_after"] = [v for _, v in p.select.options[:6]]
    out["steps"] = steps

    # the state a notebook saves (and a front end restores): JSON, with the protocol's major version
    from ipywidgets.embed import embed_data
    data = embed_data(views=[p.widget])
    text = json.dumps(data["manager_state"])
    state = data["manager_state"]["state"]
    sel = state[p.select.model_id]["state"]
    out["state"] = {"version_major": data["manager_state"]["version_major"], "json_chars": len(text),
                    "models": len(state), "select_index": sel["index"], "select_labels": len(sel["_options_labels"]),
                    "controls_module": state[p.select.model_id]["model_module_version"],
                    "image_in_state": any(s["model_name"] == "ImageModel" for s in state.values())}
    step("clear", p.clear.click)
    out["cleared"] = {"ids": p.ids, "valid": p.valid, "message": p.message.value}
    return out


class Recorder:
    """IPython's display publisher as a front end sees it: outputs, and clears that wait."""

    def __init__(self):
        self.events, self.outputs, self._pending_clear = [], [], False
        self.most = {"widget": 0, "png": 0}     # the most bars and figures on screen at once

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        kind = ("widget" if "application/vnd.jupyter.widget-view+json" in data else
                "png" if "image/png" in data else "text")
        self.events.append(kind)
        if self._pending_clear:
            self.outputs, self._pending_clear = [], False
        self.outputs.append(kind)
        self.most = {k: max(n, self.outputs.count(k)) for k, n in self.most.items()}

    def clear_output(self, wait=False):
        self.events.append("clear(wait)" if wait else "clear")
        if wait:
            self._pending_clear = True
        else:
            self.outputs = []


def liveview_checks() -> dict:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.config.IPKernelApp.fake = True        # what a Jupyter kernel looks like: to cifarlab's make_view,
    import ipykernel.zmqshell  # noqa: F401     # and to tqdm.auto (it looks for ipykernel's shell module)
    rec = Recorder()
    shell.display_pub.publish = rec.publish
    shell.display_pub.clear_output = rec.clear_output

    from cifarlab import make_config
    from cifarlab.data import subset_for
    from cifarlab.engine import train
    from cifarlab.liveview import NotebookView, make_view

    view = make_view("auto")
    cfg = make_config("template", classes=[0, 55, 58], epochs=3, plot_every=1, device="cpu")
    subset = subset_for(cfg, None)
    train(cfg.replace(pooling="max"), subset, view)   # a grid: two runs through one view, as run_grid does
    view.log.append("1/2 done")
    result = train(cfg, subset, view)
    box = view.bar.container
    bar = [w for w in box.children if type(w).__name__ in ("FloatProgress", "IntProgress")][0]
    return {"view": type(view).__name__, "is_notebook_view": isinstance(view, NotebookView),
            "epochs": len(result.history), "events": rec.events, "outputs": rec.outputs, "most": rec.most,
            "bar": {"container": type(box).__name__, "value": bar.value, "max": bar.max, "style": bar.bar_style,
                    "children": [type(w).__name__ for w in box.children]}}


if __name__ == "__main__":
    what = sys.argv[1:] or ["picker", "liveview"]
    res = {}
    if "picker" in what:
        res["picker"] = picker_checks()
    if "liveview" in what:
        res["liveview"] = liveview_checks()
    print(json.dumps(res))
