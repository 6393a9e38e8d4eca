/* core/list.h: intrusive doubly linked list (embed struct rs_list in the element). */
#ifndef RS_CORE_LIST_H
#define RS_CORE_LIST_H
#include <stddef.h>
#include <stdbool.h>

#define rs_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct rs_list {
    struct rs_list *prev;
    struct rs_list *next;
};

/* An initialised list head points at itself; so does an unlinked element. */
static inline void rs_list_init(struct rs_list *l)
{
    l->prev = l;
    l->next = l;
}

static inline bool rs_list_empty(const struct rs_list *l)
{
    return l->next == l;
}

static inline bool rs_list_linked(const struct rs_list *e)
{
    return e->next != e;
}

static inline void rs_list_insert_tail(struct rs_list *head, struct rs_list *e)
{
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}

static inline void rs_list_insert_head(struct rs_list *head, struct rs_list *e)
{
    e->next = head->next;
    e->prev = head;
    head->next->prev = e;
    head->next = e;
}

/* Unlinks |e| and leaves it self-linked, so unlinking twice is harmless. */
static inline void rs_list_unlink(struct rs_list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    rs_list_init(e);
}

#endif /* RS_CORE_LIST_H */
