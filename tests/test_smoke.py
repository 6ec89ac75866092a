from support import Caller


def test_user_sees_own_profile_only(db):
    alice = db.create_user()
    db.create_user()  # another user, whose profile alice must not see
    rows = db.as_(Caller.user(alice), "select user_id from public.profiles")
    assert rows == [(alice,)]
