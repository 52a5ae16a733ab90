"""The 11 recommended skills SeedRecommendedSkills adds (seed data). Names, tool lists,
descriptions and prompts are the original backend's, except "Todoist Execution Assistant",
written here from the original's description of it (its strings were never published)."""

from __future__ import annotations

from services.agent_queue.domain.policy import ToolPolicy
from services.agent_queue.domain.skills import SkillConfig, SkillFields

_TODOIST_ALL = ("todoist_capture_task", "todoist_list_tasks", "todoist_reschedule_task", "todoist_complete_task")


def _skill(name: str, description: str, prompt: str, allow: tuple[str, ...]) -> SkillFields:
    return SkillFields(
        name=name,
        description=description,
        enabled=True,
        config=SkillConfig(system_prompt=prompt, tool_policy=ToolPolicy(allow=allow)),
    )


RECOMMENDED_SKILLS: tuple[SkillFields, ...] = (
    _skill(
        "Summarize Links and Documents",
        "Summarizes URLs and long text into concise outputs with key points, decisions, and action items.",
        "When asked to summarize, return: Executive Summary, Key Points, Decisions, Risks, and Action Items. "
        "If source is long, summarize first and offer a deeper follow-up.",
        ("browse_url", "web_search", "google_search", "memory_store", "memory_search"),
    ),
    _skill(
        "Professional Note Structurer",
        "Transforms rough notes into clean summaries, decisions, and next actions.",
        "When given notes, return: Summary, Key Decisions, Action Items (owner + due date if available), "
        "and Open Questions.",
        ("memory_store", "memory_search", "date_calc", "get_current_time"),
    ),
    _skill(
        "Vault Notes Writer (Obsidian/Notion Style)",
        "Writes evergreen notes in a knowledge-vault style with links, tags, and reusable structure.",
        "Create structured markdown notes with: Title, Context, Details, Linked Concepts, and Next Actions. "
        "Use stable naming and avoid duplicates by checking memory first.",
        ("memory_search", "memory_store", "date_calc", "get_current_time"),
    ),
    _skill(
        "Weekly Planner",
        "Builds weekly plans from priorities and schedules practical follow-up reminders.",
        "Prioritize by impact and urgency, then propose a realistic weekly plan with daily checkpoints and "
        "explicit tradeoffs.",
        ("schedule_task", "date_calc", "get_current_time", "memory_search", "memory_store",
         "todoist_capture_task", "todoist_list_tasks", "todoist_reschedule_task"),
    ),
    _skill(
        "Reminders and Follow-ups",
        "Converts commitments into reminder plans with clear due dates, review cycles, and recurring follow-ups.",
        "When commitments are mentioned, propose reminder entries with due date/time, recurrence, and escalation "
        "notes. Ask for missing dates only when necessary.",
        ("schedule_task", "date_calc", "get_current_time", "memory_search", "memory_store", *_TODOIST_ALL),
    ),
    _skill(
        "Todoist Execution Assistant",
        "Turns plans and commitments into Todoist tasks with realistic due dates and priorities.",
        "When the user discusses plans, commitments, or action items, create or update Todoist tasks. Resolve "
        "natural-language dates with date_calc first, pick realistic due dates, and set priorities from 1 "
        "(normal) to 4 (urgent). Keep tasks concrete and actionable.",
        (*_TODOIST_ALL, "date_calc", "get_current_time", "memory_search", "memory_store"),
    ),
    _skill(
        "Project Board Planner",
        "Organizes work in board-like stages (Backlog, Next, Doing, Blocked, Done) for execution tracking.",
        "Map work into board stages and keep cards small, actionable, and outcome-based. Highlight blockers and "
        "next-owner transitions.",
        ("memory_search", "memory_store", "schedule_task", "date_calc", "get_current_time"),
    ),
    _skill(
        "Calendar and Inbox Assistant",
        "Prepares daily agendas and meeting follow-ups by synthesizing commitments and communication tasks.",
        "Produce a daily agenda with time blocks, preparation checklist, and follow-up message drafts. Emphasize "
        "realistic pacing and conflict resolution.",
        ("date_calc", "get_current_time", "schedule_task", "memory_search", "memory_store"),
    ),
    _skill(
        "Financial Planning Copilot",
        "Helps with budgeting and cashflow planning using transparent assumptions and simple math.",
        "For financial guidance, always show assumptions, formulas, and a concise risk note. Do not present "
        "estimates as certainties.",
        ("calculate", "date_calc", "browse_url", "web_search", "google_search", "memory_search", "memory_store"),
    ),
    _skill(
        "Meeting Prep and Follow-up",
        "Creates agendas before meetings and turns outcomes into concrete follow-up steps.",
        "Prepare concise meeting agendas and convert meeting outcomes into owners, deadlines, and follow-ups.",
        ("browse_url", "web_search", "google_search", "memory_search", "memory_store", "schedule_task"),
    ),
    _skill(
        "Session History Analyst",
        "Finds prior decisions and commitments from conversation memory, then summarizes what changed.",
        "When asked about past context, retrieve relevant memory, compare old vs current state, and produce a "
        "concise 'Then vs Now' summary.",
        ("memory_search", "memory_store", "date_calc", "get_current_time"),
    ),
)
