"""The built-in rewriters, registered in :data:`clipmath.caption.rewriters.REWRITERS` on its first use."""

from __future__ import annotations

from clipmath.caption.rewriters import REWRITERS, FewShotPrompt, LanguageModelRewriter, Rewriter, RewriterSpec


def _template(_arg: str | None, _prompt: FewShotPrompt) -> Rewriter:
    from clipmath.caption.template_rewrite import TemplateRewriter

    return TemplateRewriter()


def _language_model(arg: str | None, prompt: FewShotPrompt) -> Rewriter:
    return LanguageModelRewriter(str(arg), prompt)


def _openai(arg: str | None, prompt: FewShotPrompt) -> Rewriter:
    from clipmath.caption.openai_rewriter import OpenAIRewriter

    return OpenAIRewriter(str(arg), prompt)


for _spec in (
    RewriterSpec("template", "rules: replace / add / remove / recolour / attribute / keep (no model)", _template),
    RewriterSpec("lm", "a local instruction LM with a few-shot prompt (lm:smollm2-135m)", _language_model, "NAME"),
    RewriterSpec("openai", "an OpenAI-compatible chat endpoint (openai:URL[#MODEL])", _openai, "URL[#MODEL]"),
):
    REWRITERS.register(_spec.name, _spec)
