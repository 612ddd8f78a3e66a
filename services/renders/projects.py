"""Projects: a user's folders of renders. ``renderCount`` comes from one grouped join, never a query per row."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.renders.errors import AlreadyExistsError, NotFoundError
from services.renders.models import Project, ProjectIn, ProjectOut, ProjectPage, Render

MAX_SLUG_LENGTH = 60


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:MAX_SLUG_LENGTH].strip("-") or "project"


def _out(project: Project, render_count: int) -> ProjectOut:
    assert project.created_at is not None
    return ProjectOut(
        id=project.id,
        name=project.name,
        slug=project.slug,
        description=project.description,
        createdAt=project.created_at,
        renderCount=render_count,
        platform=project.platform,
    )


def _counted(user_id: str) -> tuple[Any, Any]:
    counts = (
        select(col(Render.project_id).label("project_id"), func.count().label("n"))
        .where(col(Render.user_id) == user_id, col(Render.project_id).is_not(None))
        .group_by(col(Render.project_id))
        .subquery()
    )
    return counts, func.coalesce(counts.c.n, 0)


async def list_projects(
    session: AsyncSession, user_id: str, *, platform: str | None, limit: int, offset: int
) -> ProjectPage:
    counts, render_count = _counted(user_id)
    base = select(Project).where(col(Project.user_id) == user_id)
    if platform:
        base = base.where(col(Project.platform) == platform)
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = await session.execute(
        base.add_columns(render_count)
        .outerjoin(counts, counts.c.project_id == col(Project.id))
        .order_by(col(Project.created_at).desc(), col(Project.id))
        .limit(limit)
        .offset(offset)
    )
    return ProjectPage(projects=[_out(p, n) for p, n in rows.all()], total=total, limit=limit, offset=offset)


async def get_project(session: AsyncSession, user_id: str, project_id: str) -> ProjectOut:
    counts, render_count = _counted(user_id)
    row = (
        await session.execute(
            select(Project, render_count)
            .outerjoin(counts, counts.c.project_id == col(Project.id))
            .where(col(Project.id) == project_id, col(Project.user_id) == user_id)
        )
    ).first()
    if row is None:
        raise NotFoundError("Project not found")
    return _out(row[0], row[1])


async def create_project(session: AsyncSession, user_id: str, body: ProjectIn, default_platform: str) -> ProjectOut:
    """The slug is unique per user: ``name``, ``name-2``, ``name-3``... (retried when a concurrent create won)."""
    for _ in range(5):
        try:
            async with session.begin_nested():
                return await _insert_project(session, user_id, body, default_platform)
        except IntegrityError:
            continue
    raise AlreadyExistsError("Could not choose a unique slug; retry", details={"field": "name"})


async def _insert_project(session: AsyncSession, user_id: str, body: ProjectIn, default_platform: str) -> ProjectOut:
    base = slugify(body.name)
    taken = set(
        (
            await session.execute(
                select(col(Project.slug)).where(
                    col(Project.user_id) == user_id,
                    (col(Project.slug) == base) | col(Project.slug).like(f"{base}-%"),
                )
            )
        ).scalars()
    )
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    project = Project(
        user_id=user_id,
        name=body.name.strip(),
        slug=slug,
        description=(body.description or "").strip(),
        platform=body.platform or default_platform,
    )
    session.add(project)
    await session.flush()
    await session.refresh(project)
    return _out(project, 0)


async def delete_project(session: AsyncSession, user_id: str, project_id: str) -> None:
    """The project goes; its renders stay (detached), so nothing the user paid for is lost."""
    result = await session.execute(
        delete(Project).where(col(Project.id) == project_id, col(Project.user_id) == user_id).returning(col(Project.id))
    )
    if result.first() is None:
        raise NotFoundError("Project not found")
    await session.execute(update(Render).where(col(Render.project_id) == project_id).values(project_id=None))
