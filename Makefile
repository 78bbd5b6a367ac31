# make paper    rebuild every table, figure and number of paper/paper.md from the results in
#               experiments/results/ (NAME.jsonl, or the committed NAME.jsonl.gz; under a minute)
# make results  rerun the experiments (resumable: finished runs are skipped; hours on 2 cores)
# make smoke    a tiny sweep and report, to check the machinery
PYTHON ?= python
PARTOPT = $(PYTHON) -m partopt
RESULTS = experiments/results
STUDIES = paper corrected scaling reproduction

.PHONY: paper results smoke $(addprefix results-,$(STUDIES))

paper:
	$(PARTOPT) report $(RESULTS) --out paper/generated --published paper/data \
	    --template paper/paper.template.md --paper paper/paper.md

results: $(addprefix results-,$(STUDIES))

# each sweep appends to $(RESULTS)/NAME.jsonl; its gzip snapshot is what gets committed
$(addprefix results-,$(STUDIES)): results-%:
	$(PARTOPT) sweep experiments/configs/$*.toml
	gzip -9 -n -c $(RESULTS)/$*.jsonl > $(RESULTS)/$*.jsonl.gz

smoke:
	$(PARTOPT) sweep experiments/configs/smoke.toml --out /tmp/partopt-smoke.jsonl
	$(PARTOPT) report /tmp/partopt-smoke.jsonl --out /tmp/partopt-smoke-report
