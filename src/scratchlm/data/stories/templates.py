"""The stories' sentence templates, the arcs built from them, titles and story requests.

Plain data: the order of every tuple is part of the seeded output.
"""

from __future__ import annotations

from scratchlm.data.stories.words import ARC_NAMES

# ---------------------------------------------------------------------------------------------------
# Sentence templates
#
# Slots (all filled from `grammar._story_slots`; a capitalized slot name is the sentence-initial form):
#   hero:    {Name} {he}/{He} {him} {his}/{His} {himself} {was} {wasnt} {kind} {a_hero}/{A_hero}
#            {moved} {searched}
#   friend:  {Friend} {friend_he}/{Friend_he} {friend_him} {friend_his}/{Friend_his} {friend_himself}
#            {friend_was} {friend_kind} {a_friend}/{A_friend} {friend_moved} {friend_searched}
#   family:  {family} ("mom"), {Family} ("Mom", when used as a name), {family_he}/{Family_he}
#            {family_him} {family_his}
#   place:   {place} {at_place}/{At_place} {spot_1} {spot_2} {found_spot} {activity_1} {activity_2}
#   thing:   {thing} {color} {thing_desc} ("shiny red ball") {color_thing} ("red ball")
#            {a_thing} {a_color_thing}/{A_color_thing} {thing_fun}
#   other:   {season} {time_of_day} {weather} {end_feeling} {sad} {scared} {fear} {trouble_spot}
#            {trouble_out} {home} {hobby} {distraction} {Soon} {Suddenly} {Then} {Oh_no} {Wow}
#            {cried} {gently} {sadly} {shyly}
# Never write "a {slot}": the article depends on the word, so use the a_... slots.
# ---------------------------------------------------------------------------------------------------

# Shared by every arc ---------------------------------------------------------------------------------

OPENINGS = (
    "Once upon a time, there was {a_hero} named {Name}.",
    "Once upon a time, there was {a_hero} called {Name}.",
    "There once was {a_hero} named {Name}.",
    "Once upon a time, in {home}, there lived {a_hero} named {Name}.",
    "{Name} was {a_hero} who lived in {home}.",
    "Once there was {a_hero}. {His} name was {Name}.",
    "Long ago, in {home}, there lived {a_hero}. {His} name was {Name}.",
    "There was once {a_hero} named {Name} who lived in {home}.",
    "Once upon a time, {a_hero} named {Name} lived in {home}.",
    "In {home}, there was {a_hero} named {Name}.",
    "Once upon a time, there lived {a_hero}. Everyone called {him} {Name}.",
    "Not long ago, there was {a_hero} named {Name}.",
)
HOBBY_LINES = (
    "{Name} loved to {hobby}.",
    "{He} liked to {hobby} every day.",
    "Every day, {Name} liked to {hobby}.",
    "More than anything, {Name} loved to {hobby}.",
    "{Name} was always happy when {he} could {hobby}.",
    "{He} wanted to {hobby} all day long.",
    "When the sun was out, {Name} liked to {hobby}.",
    "{Name} lived with {his} {family}, and together they liked to {hobby}.",
)
SETTINGS = (
    "One {time_of_day}, {Name} went to the {place}.",
    "One {weather} {season} {time_of_day}, {Name} {moved} to the {place}.",
    "One day, {Name} went to play {at_place}.",
    "It was a {weather} {season} day, and {Name} was playing {at_place}.",
    "One {time_of_day}, {Name} decided to go to the {place}.",
    "On a {weather} {time_of_day}, {Name} {moved} all the way to the {place}.",
    "One {season} day, {Name} and {his} {family} went to the {place}.",
    "Early one {time_of_day}, {Name} {moved} out to the {place}.",
    "After lunch one {season} day, {Name} went to the {place} to play.",
)
OWN_THING = (
    "{Name} had {a_thing}. It was {his} favorite thing in the whole world.",
    "{Name} had {a_thing}. {He} took it everywhere.",
    "{He} had {his} {thing_desc} with {him}. {His} {family} had given it to {him}.",
    "{Name} carried {a_thing}. {He} loved it more than anything.",
    "{Name} brought along {his} favorite {thing}. It was {color} and very special.",
    "{His} {thing_desc} went everywhere with {him}.",
    "{Name} had a favorite toy. It was {a_thing}.",
)
PLAY_WITH_THING = (
    "{He} {thing_fun}.",
    "{Name} {thing_fun} and laughed.",
    "For a long time, {Name} {thing_fun}.",
    "{Name} played with the {thing} for a long time.",
    "First, {Name} {thing_fun}. It was so much fun.",
)
CLOSINGS = (
    "The end.",
    "That night, {Name} went to bed with a big smile.",
    "It was the best day ever.",
    "And they all lived happily ever after.",
    "When the sun went down, everyone went home tired and happy.",
    "{Name} would remember this day for a long, long time.",
    "And that is how {Name} spent a very special {season} day.",
)

# Lost and found ---------------------------------------------------------------------------------------

LOST_THE_THING = (
    "After a while, {Name} put the {thing} down to {distraction}. When {he} turned around, the {thing} was gone!",
    "{Then}, {Name} stopped to {distraction}. When {he} looked back, {his} {thing} was not there anymore!",
    "{Suddenly}, a strong gust of wind blew. When {Name} looked down, the {thing} was gone!",
    "When it was time to go home, {Name} looked for {his} {thing}. But it was gone!",
    "{Name} {moved} off to {distraction}. When {he} came back, the {thing} was nowhere to be seen.",
)
LOST_REACTIONS = (
    '"{Oh_no}! Where is my {thing}?" {cried} {Name}.',
    '"My {thing}! Where did it go?" {Name} {cried}.',
    "{Name} felt very {sad}. {His} eyes filled with tears.",
    '{Name} was very {sad}. "I lost my {color_thing}," {he} said.',
    '"{Oh_no}," said {Name}. "I can\'t find my {thing} anywhere!"',
)
SEARCHES = (
    "{He} looked {spot_1}. {He} looked {spot_2}. But the {thing} was not there.",
    "{Name} searched {spot_1} and {spot_2}, but {he} could not find it.",
    "First, {he} looked {spot_1}. Then {he} looked {spot_2}. Still no {thing}.",
    "{Name} {moved} all around the {place}. {He} looked {spot_1} and {spot_2}, but it was not there.",
    "{He} searched {spot_1}, but there was nothing there. {He} searched {spot_2}, but it was not there either.",
)
HELPER_ARRIVES = (
    "Just then, {a_friend} named {Friend} came by.",
    "{Soon}, {a_friend} named {Friend} {friend_moved} over.",
    "{Then}, {Name} saw {a_friend}. {Friend_his} name was {Friend}.",
    "{Name}'s friend {Friend}, {a_friend}, {friend_moved} over to see what was wrong.",
)
HELPER_ASKS = (
    '"Why are you so {sad}, {Name}?" asked {Friend}.',
    '"What is wrong?" asked {Friend}.',
    '"Are you okay?" {Friend} asked {gently}.',
    '"Why do you look so {sad}?" asked {Friend}.',
)
LOST_EXPLANATIONS = (
    '"I lost my {color_thing}," said {Name}.',
    '"I can\'t find my {thing}," {Name} said {sadly}.',
    '"My {thing_desc} is gone," {Name} said. "I looked everywhere."',
)
HELPER_OFFERS = (
    '"Don\'t worry. I will help you look," said {Friend}.',
    '"I can help!" said {Friend}. "Let\'s look together."',
    '"Let\'s find it together," said {Friend} with a smile.',
    '"Two friends can look better than one," said {Friend}.',
)
FINDING = (
    "{Friend} {friend_searched}. {Soon}, {friend_he} saw something {color} {found_spot}.",
    "Together, they looked {found_spot}. And there it was!",
    "{Friend} {friend_searched}, and {friend_he} found the {thing} {found_spot}!",
    "They searched and searched. At last, {Name} saw the {color_thing} {found_spot}.",
)
FOUND_SHOUTS = (
    '"There it is!" shouted {Friend}.',
    '"My {thing}!" {Name} shouted. "You found it!"',
    '"{Wow}! You found it!" said {Name}.',
)
REUNITED = (
    "{Name} picked up {his} {thing} and held it close.",
    "{Name} hugged {his} {color_thing} tight.",
    "{Name} {moved} over and picked up the {thing}. It was safe.",
)
THANKS_FOR_HELP = (
    '"Thank you, {Friend}!" said {Name}. "You are a good friend."',
    '"Thank you for helping me," said {Name}.',
    "{Name} thanked {Friend} again and again.",
)
LOST_FEELINGS = (
    "{Name} felt so {end_feeling}.",
    "{Name} was very {end_feeling} to have {his} {thing} back.",
    "Now {Name} felt {end_feeling} again.",
    "{Name} smiled a big smile. {He} felt {end_feeling} and warm inside.",
)
LOST_MORALS = (
    "From that day on, {Name} always kept {his} {thing} close.",
    "{Name} learned to take good care of {his} things.",
    "{Name} learned that friends help each other.",
    "After that, {Name} never left {his} {thing} behind again.",
    "{Name} and {Friend} played together until the sun went down.",
)

# Sharing ------------------------------------------------------------------------------------------------

FRIEND_IS_THERE = (
    "{At_place}, {Name} saw {his} friend {Friend}, {a_friend}.",
    "There, {Name} met {a_friend} named {Friend}.",
    "{Name}'s friend {Friend}, {a_friend}, was already there.",
    "{At_place}, {a_friend} named {Friend} was playing too.",
)
ASKS_TO_SHARE = (
    '"Can I play with your {thing}?" asked {Friend}.',
    '"What a nice {thing}!" said {Friend}. "May I have a turn?"',
    '{Friend} looked at the {color_thing}. "Can we play with it together?" {friend_he} asked.',
    '"I like your {color_thing}," said {Friend}. "Will you share it with me?"',
)
REFUSES = (
    '"No," said {Name}. "It is mine!"',
    '{Name} held the {thing} tight. "No, it is my {thing}," {he} said.',
    '"No! I want to play with it all by myself," said {Name}.',
    '{Name} shook {his} head. "I don\'t want to share," {he} said.',
)
FRIEND_SADDENED = (
    "{Friend} looked {sad} and sat down all alone.",
    "{Friend}'s smile went away, and {friend_he} {friend_was} very quiet.",
    "{Friend} walked away with {friend_his} head down.",
    "{Friend} felt {sad}. {Friend_he} just wanted to play.",
)
PLAYING_ALONE = (
    "{Name} played with the {thing} all alone. But it was not much fun.",
    "{Name} {thing_fun}, but it did not feel fun anymore.",
    "{Name} tried to play by {himself}, but {he} kept looking at {Friend}.",
)
CHANGE_OF_HEART = (
    "{Name} thought about how {Friend} felt. {He} felt bad inside.",
    '{Name} remembered what {his} {family} always said: "Sharing is caring."',
    "{Name}'s tummy felt funny. {He} knew {he} had not been kind.",
    "{Name} looked at {Friend}, sitting all alone. {Then}, {Name} had an idea.",
)
SHARES = (
    '{Name} {moved} over to {Friend}. "I\'m sorry," {he} said. "Do you want to play with my {thing}?"',
    '"Here, {Friend}," said {Name}. "Let\'s play with the {thing} together."',
    '{Name} held out the {color_thing}. "You can have a turn," {he} said.',
    '"I\'m sorry I didn\'t share," said {Name}. "Let\'s take turns."',
)
FRIEND_CHEERS_UP = (
    '{Friend} smiled a big smile. "Thank you, {Name}!"',
    '{Friend}\'s face lit up. "Really? Thank you!" {friend_he} said.',
    '"{Wow}!" said {Friend}, jumping up and down.',
)
PLAYING_TOGETHER = (
    "They took turns with the {thing}. {Name} went first, and then {Friend}.",
    "Together, they played with the {color_thing} all {time_of_day}.",
    "They laughed and played with the {thing} until the sun went down.",
    "They played with the {thing} together. It was much more fun than playing alone.",
)
SHARING_FEELINGS = (
    "{Name} felt {end_feeling} inside.",
    "{Name} was {end_feeling} that {he} had shared.",
    "Sharing made {Name} feel {end_feeling}.",
    "{Name} felt {end_feeling}, and {Friend} felt happy too.",
)
SHARING_MORALS = (
    "{Name} learned that sharing is more fun than keeping things to yourself.",
    "{Name} learned that sharing makes everyone happy.",
    "From that day on, {Name} always shared {his} toys with {his} friends.",
    "{Name} and {Friend} became best friends, and they shared everything.",
)

# Fear overcome ------------------------------------------------------------------------------------------

FEAR_INTRODUCED = (
    "But there was one thing {Name} did not like. {He} {was} afraid of {fear}.",
    "{Name} was brave in many ways, but {he} {was} {scared} of {fear}.",
    "{Name} had a secret. {He} {was} afraid of {fear}.",
    "There was just one problem. {Name} was very {scared} of {fear}.",
)
COMFORT_THING = (
    "Whenever {he} felt {scared}, {Name} held {his} {thing_desc}. It made {him} feel safe.",
    "{Name} always carried {a_thing}. It helped {him} feel brave.",
    "{His} {family} had given {him} {a_thing} to help {him} feel brave.",
    "{Name} had {a_thing} that {he} hugged when {he} felt {scared}.",
)
FRIEND_COMES_ALONG = (
    "{His} friend {Friend}, {a_friend}, came along too.",
    "There, {Name} played with {a_friend} named {Friend}.",
    "{At_place}, {Name} met {his} good friend {Friend}, {a_friend}.",
)
PLAYING_WITH_FRIEND = (
    "They played games and ran around.",
    "They played with {Name}'s {color_thing} and laughed.",
    "{Name} and {Friend} {activity_1}.",
)
FEAR_REACTIONS = (
    "{Name} shook with fear. {He} hugged {his} {thing} tight.",
    '"I\'m scared!" {cried} {Name}. {He} wanted to run home.',
    "{Name}'s heart beat fast. {He} closed {his} eyes and held {his} {color_thing}.",
    '{Name} hid behind {Friend}. "I don\'t like {fear}," {he} whispered.',
)
FRIEND_CALMS = (
    '{Friend} sat close to {Name}. "It\'s okay," {friend_he} said.',
    '"Don\'t be scared," said {Friend} {gently}.',
    '{Friend} came close. "I am right here with you," {friend_he} said.',
)
DEEP_BREATHS = (
    "{Name} took a deep breath.",
    "{Name} thought about what {Friend} said. Then {he} took a deep breath.",
    '"Okay," said {Name}. "I will try."',
    "{Name} held {his} {thing} close and nodded.",
)
FEAR_GONE = (
    '"It is not so scary after all!" said {Name}.',
    '"I did it!" {Name} shouted. "I am not afraid anymore!"',
    "{Name} was surprised. It was not so bad after all.",
)
FEAR_FEELINGS = (
    "{Name} felt {end_feeling}.",
    "Now {Name} felt {end_feeling} inside.",
    "{Name} smiled. {He} felt so {end_feeling}.",
)
FEAR_MORALS = (
    "{Name} learned that being brave means trying even when you are scared.",
    "{Name} learned that a good friend can make anything less scary.",
    "From that day on, {Name} was not afraid of {fear} anymore.",
    "After that, {Name} was never {scared} of {fear} again.",
)

# Making a friend ----------------------------------------------------------------------------------------

LONELY = (
    "{Name} had just moved to a new home, and {he} did not have any friends yet.",
    "{Name} did not have many friends, and sometimes {he} felt lonely.",
    "{Name} wanted a friend to play with, but {he} {was} too shy to say hello.",
    "{Name} often played alone and wished {he} had a friend.",
)
SEES_NEW_FRIEND = (
    "There, {Name} saw {a_friend} sitting all alone.",
    "{At_place}, {Name} saw {a_friend} who looked lonely too.",
    "{Then}, {Name} saw {a_friend} {spot_1}. The {friend_kind} {friend_was} all by {friend_himself}.",
    "{Name} noticed {a_friend} sitting {spot_1}, watching the others play.",
)
WORKS_UP_COURAGE = (
    "{Name} wanted to say hello, but {he} felt shy.",
    "{Name} took a deep breath and {moved} over.",
    "{Name} thought for a moment. Then {he} {moved} over to say hello.",
)
SAYS_HELLO = (
    '"Hello! My name is {Name}," said {Name}. "What is your name?"',
    '"Hi there!" said {Name}. "I\'m {Name}. Who are you?"',
    '"Hello," said {Name} {shyly}. "Do you want to play?"',
)
NEW_FRIEND_REPLIES = (
    '"I\'m {Friend}," said the {friend_kind}.',
    '"My name is {Friend}," said the {friend_kind} with a smile.',
    'The {friend_kind} smiled. "Hi! I\'m {Friend}."',
)
OFFERS_TO_PLAY = (
    '{Name} showed {Friend} {his} {thing_desc}. "Do you want to play with it?" {he} asked.',
    '"Let\'s play with my {color_thing}!" said {Name}.',
    '{Name} held up {a_thing}. "Look what I have!" {he} said.',
)
ACCEPTS = (
    '"Yes, please!" said {Friend}.',
    '"Oh, yes!" said {Friend} happily.',
    '{Friend}\'s eyes lit up. "I would love to!"',
)
NEW_FRIENDS_PLAY = (
    "They played with the {thing} all {time_of_day}.",
    "{Name} and {Friend} took turns with the {thing}. They laughed and laughed.",
    "{Name} showed {Friend} how to {hobby}, and {Friend} showed {Name} a new game.",
    "They ran, jumped and laughed together. Then they played with the {color_thing}.",
)
BONDING = (
    "{Friend} was funny and kind, and {Name} liked {friend_him} very much.",
    '"This is the best day ever," said {Friend}.',
    "Soon they were laughing like old friends.",
)
NEW_FRIEND_FEELINGS = (
    "{Name} felt {end_feeling}. {He} {wasnt} lonely anymore.",
    "{Name} felt so {end_feeling} to have a new friend.",
    "{Name} went home feeling {end_feeling}.",
)
NEW_FRIEND_MORALS = (
    "{Name} learned that saying hello is the first step to making a friend.",
    "{Name} learned that a little courage can bring a new friend.",
    "From that day on, {Name} and {Friend} played together every day.",
    "{Name} and {Friend} became the best of friends.",
)

# Helping someone ----------------------------------------------------------------------------------------

MEETS_SOMEONE_IN_TROUBLE = (
    "{Suddenly}, {Name} heard someone crying. It was {a_friend} named {Friend}.",
    "{Then}, {Name} heard a sad little voice. {He} {moved} over and found {a_friend} named {Friend}.",
    "As {he} played, {Name} saw {a_friend} who looked very {sad}. {Friend_his} name was {Friend}.",
    "{Name} saw {a_friend} named {Friend} standing all alone. {Friend} looked very {sad}.",
)
ASKS_WHAT_IS_WRONG = (
    '"What is wrong?" asked {Name}.',
    '"Why are you {sad}?" asked {Name} {gently}.',
    '"Can I help you?" asked {Name}.',
)
TROUBLE = (
    '"My {thing_desc} is stuck {trouble_spot}," said {Friend}. "I can\'t get it back."',
    '{Friend} sniffed. "My {color_thing} got stuck {trouble_spot}!"',
    "{Name} looked and saw {Friend}'s {color_thing}. It was stuck {trouble_spot}.",
    '"Look," said {Friend} {sadly}. "My {color_thing} is stuck {trouble_spot}."',
)
OFFERS_HELP = (
    "{Name} thought and thought.",
    '"Don\'t worry," said {Name}. "I will help you."',
    '"I have an idea!" said {Name}.',
)
FIRST_TRY_FAILS = (
    "First, {Name} tried to reach it, but it was too far.",
    "{Name} stretched as far as {he} could, but {he} could not reach the {thing}.",
    "{Name} tried and tried, but the {thing} did not move.",
)
SOLVES_IT = (
    "Then {Name} found a long stick. {He} pushed and poked, and the {thing} came {trouble_out}!",
    "{Name} asked {his} {family} for help. Together, they got the {thing} {trouble_out}.",
    "{Name} was very careful. Slowly, {he} got the {thing} {trouble_out}.",
    "{Name} and {Friend} worked together. They pulled and pulled, and at last the {thing} came {trouble_out}.",
)
GIVES_BACK = (
    '"Here is your {thing}," said {Name}.',
    "{Name} gave the {color_thing} back to {Friend}.",
    "{Name} handed {Friend} the {thing}. It was safe and sound.",
)
THANKS_THE_HELPER = (
    '"Thank you, {Name}!" said {Friend}. "You are so kind."',
    '{Friend} jumped for joy. "You saved my {thing}!"',
    '"You are a real hero!" said {Friend}.',
)
HELPING_FEELINGS = (
    "{Name} felt {end_feeling} that {he} could help.",
    "Helping {Friend} made {Name} feel {end_feeling}.",
    "{Name} felt warm and {end_feeling} inside.",
)
AFTER_HELPING = (
    "Then {Name} and {Friend} played with the {thing} together.",
    "{Friend} let {Name} have a turn with the {thing}.",
    "{Name} and {Friend} became good friends.",
)
HELPING_MORALS = (
    "{Name} learned that helping others feels good.",
    "{Name} learned that even a small {kind} can be a big help.",
    "From that day on, {Name} always helped anyone in need.",
)

# A (birthday) surprise ----------------------------------------------------------------------------------

BIRTHDAY_COMING = (
    "Tomorrow was {Name}'s birthday, and {he} could not wait.",
    "It was {Name}'s birthday, but nobody seemed to remember.",
    "One {season} morning, {Name} woke up early. It was {his} birthday!",
    "Today was a special day. It was {Name}'s birthday!",
)
NOBODY_REMEMBERS = (
    "{His} {family} was busy and did not say anything about it.",
    '{Name} waited and waited, but no one said, "Happy birthday!"',
    "{Name} looked for {his} friends, but no one was around.",
    "Everyone seemed too busy to notice {Name}.",
)
DISAPPOINTED = (
    "{Name} felt a little {sad}.",
    "{He} sat down and sighed. Maybe everyone forgot.",
    '"Did everyone forget my birthday?" {Name} wondered.',
)
TAKEN_TO_THE_PLACE = (
    '{Then}, {his} {family} said, "{Name}, come with me to the {place}."',
    "{Then}, {his} {family} took {him} to the {place}.",
    "In the {time_of_day}, {his} {family} asked {him} to come to the {place}.",
    '"Let\'s go for a walk," said {Family}. So they went to the {place}.',
)
SURPRISE = (
    'When they got there, everyone jumped out and shouted, "Surprise!"',
    '{His} friends were waiting {spot_1}. "Surprise!" they shouted.',
    "{At_place}, there were balloons, a big cake and all of {his} friends.",
    '{Suddenly}, all of {his} friends jumped up. "Happy birthday, {Name}!"',
)
FRIEND_AT_PARTY = (
    "{His} friend {Friend}, {a_friend}, was there too.",
    '{Friend}, {a_friend}, {friend_moved} up. "Happy birthday, {Name}!" {friend_he} said.',
    "Even {Friend}, {a_friend}, had come to the party.",
)
THE_GIFT = (
    "{His} {family} gave {him} a present. Inside was {a_thing}!",
    "{Name} opened a big box. Inside, there was {a_thing}!",
    "{Friend} had a gift for {Name}, too. It was {a_thing}!",
    "There was a present with a big bow. {Name} opened it and found {a_thing}.",
)
LOVES_THE_GIFT = (
    '"{Wow}! {A_color_thing}!" said {Name}. "Thank you!"',
    '{Name} jumped up and down. "I love it!" {he} shouted.',
    '"It is just what I wanted!" said {Name}.',
)
PARTY = (
    "They ate cake and played games.",
    "{Name} and {Friend} played with the new {thing} until the sun went down.",
    "Everyone sang a song for {Name}, and {he} blew out the candles.",
    "{Name} {thing_fun}, and everyone cheered.",
)
SURPRISE_FEELINGS = (
    "{Name} felt so {end_feeling}.",
    "It was the best birthday ever, and {Name} felt {end_feeling}.",
    "{Name} hugged {his} {family}. {He} felt very {end_feeling}.",
)
SURPRISE_MORALS = (
    "{Name} learned that the ones who love you never forget.",
    "{Name} knew {he} had the best friends in the world.",
    "{Name} kept the {color_thing} for a long, long time.",
)

# A trip -------------------------------------------------------------------------------------------------

TRIP_ANNOUNCED = (
    'One {season} {time_of_day}, {his} {family} said, "Today we are going on a trip to the {place}!"',
    "{Name} and {his} {family} were going on a trip to the {place}.",
    "One day, {Name}'s {family} had big news. \"Let's go to the {place}!\" {family_he} said.",
    "It was the day of the big trip. {Name} and {his} {family} were going to the {place}.",
)
EXCITED = (
    "{Name} was so excited that {he} {moved} in circles.",
    '"Hooray!" shouted {Name}.',
    "{Name} could not wait to go.",
)
PACKS_THE_THING = (
    "{He} packed {his} {thing_desc} to bring along.",
    "{Name} took {a_thing} with {him}.",
    "Before they left, {Name} put {his} {thing_desc} in {his} bag.",
)
TRAVEL = (
    "They rode in the car for a long time.",
    "They took a bus, and then they walked the rest of the way.",
    "The trip was long, but {Name} looked out the window and counted the trees.",
    "They sang songs all the way there.",
)
ARRIVAL = (
    "At last, they got to the {place}.",
    "Finally, they were {at_place}.",
    "When they got to the {place}, {Name}'s eyes went wide.",
)
TRIP_ACTIVITIES = (
    "First, {Name} {activity_1}. Then {he} {activity_2}.",
    "{Name} {activity_1}, and {his} {family} {activity_2}.",
    "They {activity_1} and {activity_2}.",
)
MEETS_AT_DESTINATION = (
    "{At_place}, {Name} met {a_friend} named {Friend}.",
    "{Then}, {a_friend} named {Friend} {friend_moved} up to say hello.",
    "{Name} saw {a_friend} named {Friend} playing nearby.",
)
PLAYS_TOGETHER_ON_TRIP = (
    '"Can I play too?" asked {Friend}. "Of course!" said {Name}. They played with the {thing} together.',
    "{Name} showed {Friend} {his} {color_thing}, and they played with it together.",
    "{Name} and {Friend} took turns with the {thing}.",
)
TRIP_TWIST = (
    "{Name} almost left {his} {thing} {found_spot}, but {Friend} found it and gave it back.",
    "{Suddenly}, the {thing} was gone! But {Friend} found it {found_spot}.",
)
TIME_TO_GO = (
    "When the sun began to set, it was time to go home.",
    "Soon it was time to say goodbye.",
    '"Goodbye, {Friend}!" said {Name}. "I hope I see you again."',
)
BACK_HOME = (
    "On the way home, {Name} fell asleep in the car.",
    "That night, {Name} told {his} {family} all about {his} day.",
    "At home, {Name} put {his} {thing} by {his} bed.",
)
TRIP_FEELINGS = (
    "{Name} felt {end_feeling}. It had been a wonderful trip.",
    "{Name} was tired but {end_feeling}.",
    "{Name} felt so {end_feeling} about the trip to the {place}.",
)
TRIP_MORALS = (
    "{Name} learned that new places can be full of fun.",
    "{Name} hoped they would go back to the {place} again soon.",
)


# ---------------------------------------------------------------------------------------------------
# Arcs: paragraphs of stages; a stage is (templates, chance of appearing). A string instead of
# templates names a pool that depends on the plan ("season", "sight", "fear_appears", ...).
# ---------------------------------------------------------------------------------------------------

Stage = tuple[tuple[str, ...] | str, float]

ARCS: dict[str, tuple[tuple[Stage, ...], ...]] = {
    "lost_and_found": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (SETTINGS, 1.0), ("season", 0.5), ("sight", 0.3)),
        ((OWN_THING, 1.0), (PLAY_WITH_THING, 0.6), (LOST_THE_THING, 1.0), (LOST_REACTIONS, 1.0), (SEARCHES, 1.0)),
        ((HELPER_ARRIVES, 1.0), (HELPER_ASKS, 0.8), (LOST_EXPLANATIONS, 0.8), (HELPER_OFFERS, 1.0), (FINDING, 1.0), (FOUND_SHOUTS, 0.5), (REUNITED, 0.7)),
        ((THANKS_FOR_HELP, 0.7), (LOST_FEELINGS, 1.0), (LOST_MORALS, 0.6), (CLOSINGS, 0.4)),
    ),
    "sharing": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (OWN_THING, 1.0), (PLAY_WITH_THING, 0.5)),
        ((SETTINGS, 1.0), ("season", 0.4), ("sight", 0.3), (FRIEND_IS_THERE, 1.0), (ASKS_TO_SHARE, 1.0), (REFUSES, 1.0), (FRIEND_SADDENED, 1.0)),
        ((PLAYING_ALONE, 1.0), (CHANGE_OF_HEART, 1.0), (SHARES, 1.0), (FRIEND_CHEERS_UP, 0.8), (PLAYING_TOGETHER, 1.0)),
        ((SHARING_FEELINGS, 1.0), (SHARING_MORALS, 0.7), (CLOSINGS, 0.4)),
    ),
    "fear": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (FEAR_INTRODUCED, 1.0), (COMFORT_THING, 1.0)),
        ((SETTINGS, 1.0), ("season", 0.4), (FRIEND_COMES_ALONG, 1.0), (PLAYING_WITH_FRIEND, 0.6), ("fear_appears", 1.0), (FEAR_REACTIONS, 1.0)),
        ((FRIEND_CALMS, 1.0), ("fear_explanations", 1.0), (DEEP_BREATHS, 1.0), ("fear_brave_moments", 1.0), (FEAR_GONE, 0.8)),
        ((FEAR_FEELINGS, 1.0), (FEAR_MORALS, 0.8), (CLOSINGS, 0.4)),
    ),
    "new_friend": (
        ((OPENINGS, 1.0), (LONELY, 1.0), (OWN_THING, 1.0)),
        ((SETTINGS, 1.0), ("season", 0.4), ("sight", 0.4), (SEES_NEW_FRIEND, 1.0), (WORKS_UP_COURAGE, 1.0), (SAYS_HELLO, 1.0), (NEW_FRIEND_REPLIES, 1.0)),
        ((OFFERS_TO_PLAY, 1.0), (ACCEPTS, 1.0), (NEW_FRIENDS_PLAY, 1.0), (BONDING, 0.7)),
        ((NEW_FRIEND_FEELINGS, 1.0), (NEW_FRIEND_MORALS, 0.8), (CLOSINGS, 0.4)),
    ),
    "helping": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (SETTINGS, 1.0), ("season", 0.5), ("sight", 0.3)),
        ((MEETS_SOMEONE_IN_TROUBLE, 1.0), (ASKS_WHAT_IS_WRONG, 1.0), (TROUBLE, 1.0)),
        ((OFFERS_HELP, 1.0), (FIRST_TRY_FAILS, 0.7), (SOLVES_IT, 1.0), (GIVES_BACK, 1.0), (THANKS_THE_HELPER, 1.0)),
        ((HELPING_FEELINGS, 1.0), (AFTER_HELPING, 0.7), (HELPING_MORALS, 0.6), (CLOSINGS, 0.4)),
    ),
    "surprise": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.5), (BIRTHDAY_COMING, 1.0)),
        ((NOBODY_REMEMBERS, 1.0), (DISAPPOINTED, 1.0), (TAKEN_TO_THE_PLACE, 1.0), ("season", 0.4)),
        ((SURPRISE, 1.0), (FRIEND_AT_PARTY, 1.0), (THE_GIFT, 1.0), (LOVES_THE_GIFT, 1.0), (PARTY, 1.0)),
        ((SURPRISE_FEELINGS, 1.0), (SURPRISE_MORALS, 0.5), (CLOSINGS, 0.4)),
    ),
    "trip": (
        ((OPENINGS, 1.0), (HOBBY_LINES, 0.4), (TRIP_ANNOUNCED, 1.0), (EXCITED, 0.8), (PACKS_THE_THING, 1.0)),
        ((TRAVEL, 0.8), (ARRIVAL, 1.0), ("season", 0.4), ("sight", 1.0), (TRIP_ACTIVITIES, 1.0)),
        ((MEETS_AT_DESTINATION, 1.0), (PLAYS_TOGETHER_ON_TRIP, 1.0), (TRIP_TWIST, 0.4)),
        ((TIME_TO_GO, 1.0), (BACK_HOME, 0.8), (TRIP_FEELINGS, 1.0), (TRIP_MORALS, 0.5), (CLOSINGS, 0.3)),
    ),
}  # fmt: skip
assert tuple(ARCS) == ARC_NAMES


TITLES: dict[str, tuple[str, ...]] = {
    "lost_and_found": ("{Name} and the Lost {Thing}", "The Lost {Color} {Thing}", "Where Is {Name}'s {Thing}?", "{Name} Finds the {Color} {Thing}", "{Name} and {Friend} Find the {Thing}"),
    "sharing": ("{Name} Learns to Share", "{Name} and the {Color} {Thing}", "Sharing with {Friend}", "Taking Turns with the {Color} {Thing}"),
    "fear": ("{Name} Is Not Afraid of {Fear}", "{Name} Faces {Fear}", "The Brave Little {Kind}", "{Name} and {Friend} Are Brave"),
    "new_friend": ("{Name} Makes a Friend", "{Name} and {Friend}", "A New Friend for {Name}", "The {Kind} and the {Friend_kind}"),
    "helping": ("{Name} Helps {Friend}", "The {Thing} {Trouble}", "{Name} to the Rescue", "A Friend in Need"),
    "surprise": ("A Surprise for {Name}", "{Name}'s Birthday Surprise", "The {Color} {Thing}", "{Name}'s Best Birthday"),
    "trip": ("A Trip to the {Place}", "{Name} Goes to the {Place}", "A Day {At_place}", "{Name}'s Big Trip"),
}  # fmt: skip

# Requests that end in "{about}" get "a cat who loses a ball"; "{where}" gets "a cat loses a ball".
STORY_REQUESTS = (
    "Tell me a story about {about}.",
    "Write a short story about {about}.",
    "Can you tell me a story about {about}?",
    "Write a story for a child about {about}.",
    "Please tell me a bedtime story about {about}.",
    "Make up a story about {about}.",
    "I would like a story about {about}.",
    "Tell me a short story about {about}, please.",
    "Can you tell me a story where {where}?",
    "Write a story where {where}.",
    "Tell me a story in which {where}.",
)
