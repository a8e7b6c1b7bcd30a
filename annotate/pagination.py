"""The API's pagination: cursor pages ordered by id."""

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Stable pages by id: new rows never shift a page, and deep pages cost what the first does."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
