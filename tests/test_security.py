"""Holes a review found, each closed and kept closed: who may change owners and make accounts,
webhook targets (SSRF), login throttling, upload limits."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from annotate.actions import do_set_member
from annotate.models import Membership, Role

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_owners(project, users):
    User = get_user_model()
    second = User.objects.create_user("owner2", password="pw-owner2")
    do_set_member(project, "owner2", Role.OWNER)
    return project, second


def test_a_manager_can_neither_demote_nor_remove_an_owner(two_owners, users):
    project, second = two_owners
    manager = login(users["manager"])

    demoted = manager.post(reverse("members", args=[project.slug]), {"username": "owner2", "role": "annotator"})
    removed = manager.post(reverse("members", args=[project.slug]), {"remove": str(second.pk)})

    assert (demoted.status_code, removed.status_code) == (400, 400)
    assert b"Only an owner" in demoted.content and b"Only an owner" in removed.content
    assert Membership.objects.get(project=project, user=second).role == Role.OWNER


def test_an_owner_changes_owners_but_keeps_the_last_one(two_owners, users):
    project, second = two_owners
    owner = login(users["owner"])

    owner.post(reverse("members", args=[project.slug]), {"username": "owner2", "role": "manager"})
    last = owner.post(reverse("members", args=[project.slug]), {"remove": str(users["owner"].pk)})

    assert Membership.objects.get(project=project, user=second).role == Role.MANAGER
    assert last.status_code == 400 and b"at least one owner" in last.content
    assert Membership.objects.get(project=project, user=users["owner"]).role == Role.OWNER


def test_only_staff_create_site_accounts(project, users):
    refused = login(users["manager"]).post(reverse("members", args=[project.slug]),
                                           {"username": "newbie", "role": "annotator", "create": "1"})
    assert refused.status_code == 400 and b"Only staff" in refused.content
    assert not get_user_model().objects.filter(username="newbie").exists()

    users["owner"].is_staff = True
    users["owner"].save()
    made = login(users["owner"]).post(reverse("members", args=[project.slug]),
                                      {"username": "newbie", "role": "annotator", "create": "1"}, follow=True)
    assert b"password (shown once)" in made.content
    assert project.memberships.filter(user__username="newbie", role="annotator").exists()
